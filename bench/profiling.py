"""cProfile for the bench's web and worker processes, every thread of them, without touching their code.

cProfile profiles only the thread that enables it; here `threading.setprofile`
hands every new thread a Profile of its own (the send threads of a worker; web's
gevent worker runs its request greenlets in the thread that installs the profiler)
and all of them are merged into one pstats file per process when it exits (after
SIGTERM, as Stack.stop sends).

  clock "cpu": time.thread_time, the CPU each thread spent (where the cores go);
  clock "wall": perf_counter, including waits on sockets and locks.

Used by `python -m bench.throughput --profile DIR [--profile-clock cpu|wall]`:
  workers run as `python -m bench.profiling worker` (this file's main), web under
  bench/gunicorn_profiled.py. Read the result with
  `python -m bench.profiling show DIR/worker-*.prof [--sort tottime] [--limit 40]`.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import glob
import os
import pstats
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()
_clock = time.thread_time


def _new_profile() -> cProfile.Profile:
    profile = cProfile.Profile(_clock)
    with _lock:
        _profiles.append(profile)
    return profile


def _start_in_thread(frame: FrameType, event: str, arg: object) -> None:
    """The first profile event of a new thread: replace this hook by a Profile of the thread's own."""
    sys.setprofile(None)
    _new_profile().enable()


def install(clock: str = "cpu") -> None:
    """Profile the calling thread and every thread started from now on."""
    global _clock
    _clock = time.thread_time if clock == "cpu" else time.perf_counter
    threading.setprofile(_start_in_thread)
    _new_profile().enable()


class _Snapshot:
    """What pstats.Stats takes: an object with create_stats() and .stats."""

    def __init__(self, stats: dict[Any, Any]) -> None:
        self.stats = stats

    def create_stats(self) -> None:
        pass


def _stats(profile: cProfile.Profile) -> pstats.Stats:
    # pstats takes any object with create_stats() and .stats; typeshed lists only Profile and a path
    return pstats.Stats(_Snapshot(profile.stats))  # type: ignore[arg-type]


def dump(path: str | os.PathLike[str]) -> None:
    """Merge every thread's profile (read without stopping the others) into one pstats file."""
    with _lock:
        profiles = list(_profiles)
    merged: pstats.Stats | None = None
    for profile in profiles:
        try:
            profile.snapshot_stats()
        except Exception:
            continue
        if not profile.stats:
            continue
        if merged is None:
            merged = _stats(profile)
        else:
            merged.add(_stats(profile))
    if merged is not None:
        merged.dump_stats(str(path))


def _out(kind: str) -> Path:
    folder = Path(os.environ["BENCH_PROFILE_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{kind}-{os.getpid()}.prof"


def stack_options(folder: str, clock: str, extra_env: dict[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    """(environment, Stack keyword arguments) that run web, workers and the sandbox under the profiler."""
    env = {**extra_env, "BENCH_PROFILE_DIR": str(Path(folder).resolve()), "BENCH_PROFILE_CLOCK": clock}
    return env, {
        "web_conf": "bench/gunicorn_profiled.py",
        "sandbox_conf": "bench/sandbox_profiled.py",
        "worker_argv": [sys.executable, "-m", "bench.profiling", "worker"],
    }


def run_worker() -> None:
    """`python -m workers`, profiled; the profile is written when the worker exits."""
    install(os.environ.get("BENCH_PROFILE_CLOCK", "cpu"))
    out = _out("worker")
    done = threading.Event()

    def write() -> None:
        if not done.is_set():
            done.set()
            dump(out)

    atexit.register(write)
    from workers.__main__ import main

    try:
        main()
    finally:
        write()


def show(files: list[str], sort: str, limit: int) -> None:
    paths = [p for f in files for p in sorted(glob.glob(f))]
    if not paths:
        raise SystemExit("no profile files")
    stats = pstats.Stats(*paths)
    stats.sort_stats(sort).print_stats(limit)


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        run_worker()
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.profiling")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run `python -m workers` under the profiler (BENCH_PROFILE_DIR)")
    show_parser = sub.add_parser("show", help="print merged pstats files")
    show_parser.add_argument("files", nargs="+")
    show_parser.add_argument("--sort", default="tottime")
    show_parser.add_argument("--limit", type=int, default=40)
    args = parser.parse_args(argv)
    show(args.files, args.sort, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
