"""Benchmarks: each prints its figures as ratios against a baseline measured in the same run.

`python -m bench` lists and runs them; `python -m bench.<name> --help` shows one's options.
"""
