"""A Plivo-compatible API simulator with fault switches, for tests, local runs and benchmarks."""
