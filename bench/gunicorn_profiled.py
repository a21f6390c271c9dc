"""gunicorn settings for a profiled web: the project's gunicorn.conf.py, plus hooks that
cProfile every thread of each worker process into $BENCH_PROFILE_DIR/web-<pid>.prof
(see bench/profiling.py). Used only by `python -m bench.throughput --profile DIR`."""

import runpy
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

globals().update({k: v for k, v in runpy.run_path(str(_ROOT / "gunicorn.conf.py")).items() if not k.startswith("_")})


def post_worker_init(worker: object) -> None:
    import os

    from bench import profiling

    profiling.install(os.environ.get("BENCH_PROFILE_CLOCK", "cpu"))


def worker_exit(server: object, worker: object) -> None:
    from bench import profiling

    profiling.dump(profiling._out("web"))
