"""`python -m sandbox [--bind HOST:PORT]`: run the sandbox under gunicorn with its own config."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--bind", help="HOST:PORT to listen on (default: $SANDBOX_BIND or 127.0.0.1:8010)")
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "gunicorn", "-c", str(HERE / "gunicorn_conf.py")]
    if args.bind:
        command += ["--bind", args.bind]
    os.execv(sys.executable, [*command, "sandbox.app:create_app()"])


if __name__ == "__main__":
    main()
