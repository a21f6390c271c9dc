"""gunicorn settings for a profiled sandbox: sandbox/gunicorn_conf.py, plus the hooks of
bench/gunicorn_profiled.py, into $BENCH_PROFILE_DIR/sandbox-<pid>.prof. Used by
`python -m bench.throughput --profile DIR`: the sandbox's share is the harness's cost."""

import runpy
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

globals().update(
    {k: v for k, v in runpy.run_path(str(_ROOT / "sandbox" / "gunicorn_conf.py")).items() if not k.startswith("_")}
)


def post_worker_init(worker: object) -> None:
    import os

    from bench import profiling

    profiling.install(os.environ.get("BENCH_PROFILE_CLOCK", "cpu"))


def worker_exit(server: object, worker: object) -> None:
    from bench import profiling

    profiling.dump(profiling._out("sandbox"))
