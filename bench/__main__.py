"""`python -m bench` (or `python3 manage.py bench`): list and run the benchmarks.

python -m bench                 run every bench with its defaults, one after the other
python -m bench --list          list them
python -m bench NAME [ARGS...]  run one, e.g. `python -m bench throughput --workers 3`
                                (the same as `python -m bench.NAME ARGS...`)
"""

from __future__ import annotations

import importlib
import sys

# name -> module; each module has main(argv) -> int and a docstring whose first line says what it measures
BENCHES = {
    "throughput": "bench.throughput",
    "notifications": "bench.notifications",
    "memory": "bench.memory",
    "cluster": "bench.cluster",
    "console": "bench.console",
    "waiting": "bench.waiting",
    "steps": "bench.steps",
    "scripts": "bench.scripts",
    "ingest": "bench.ingest",
    "redis_client": "bench.redis_client",
    "http_parser": "bench.http_parser",
    "series": "bench.series",
}


def summary(module_name: str) -> str:
    module = importlib.import_module(module_name)
    return (module.__doc__ or "").strip().splitlines()[0]


def main(argv: list[str]) -> int:
    if argv[:1] in (["--list"], ["-l"], ["list"]):
        for name, module in BENCHES.items():
            print(f"{name:<12} {summary(module)}")
        return 0
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if argv:
        name, rest = argv[0], argv[1:]
        if name not in BENCHES:
            print(f"no bench {name!r}; known: {', '.join(BENCHES)}", file=sys.stderr)
            return 2
        return importlib.import_module(BENCHES[name]).main(rest)
    status = 0
    for name, module in BENCHES.items():
        print(f"== bench {name}: {summary(module)}", flush=True)
        status = importlib.import_module(module).main([]) or status
        if status == 130:  # interrupted: stop here
            break
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
