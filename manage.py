#!/usr/bin/env python3
"""Answerback's single entry point; needs only Python 3.11+ and pip.

  python3 manage.py run            the whole system locally (embedded Redis, sandbox, web, worker)
  python3 manage.py test           the test suite (pytest arguments may follow)
  python3 manage.py test --fast    the unit tier alone (tests marked `fast`), in under a minute
  python3 manage.py bench          the benchmarks in bench/
  python3 manage.py migrate --from URL   copy a drained single-Redis store into the partitioned
                                   one the environment names (store/migrate.py)

The first call makes .venv and installs requirements-dev.txt into it (requirements.txt, what
production needs, and the tools of local runs, tests and benchmarks), and the client package
in client/ (editable, so its `answerback` command and `answerback_client` work from anywhere).
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
REQUIREMENTS = ROOT / "requirements-dev.txt"  # starts with -r requirements.txt
CLIENT = ROOT / "client"
INSTALLED_FROM = (ROOT / "requirements.txt", REQUIREMENTS, CLIENT / "pyproject.toml")  # a change reinstalls
COMMANDS = {
    "run": ["-m", "local.run"],
    "test": ["-m", "pytest"],
    "bench": ["-m", "bench"],
    "migrate": ["-m", "store.migrate"],
}


def ensure_venv() -> None:
    """Create .venv and (re)install whenever requirements.txt, requirements-dev.txt or the
    client's pyproject.toml changed (the client is installed editable: a change to its code
    needs no reinstall)."""
    if not PYTHON.exists():
        print("creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    stamp = VENV / ".requirements.sha256"
    digest = install_digest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    print("installing requirements-dev.txt and client/ into .venv ...", flush=True)
    subprocess.run(
        [
            str(PYTHON),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(REQUIREMENTS),
            "-e",
            str(CLIENT),
        ],
        check=True,
    )
    stamp.write_text(digest)


def install_digest() -> str:
    digest = hashlib.sha256()
    for path in INSTALLED_FROM:
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


TEST_MEMORY_LIMIT = "4G"  # address space per process of a test run; a full run peaks near 1.55G


def cap_memory(setting: str) -> None:
    """Cap the address space of the test run's every process (pytest, and the Redis, sandbox,
    web and worker children that inherit it), so that a runaway test fails with a
    MemoryError and a traceback instead of taking the machine. Soft limit only: a test that
    starts a program reserving far more than it uses can lift it for that child."""
    match = re.fullmatch(r"(\d+)([MG]?)", setting.strip().upper())
    if setting.strip().lower() in ("0", "off", "none"):
        return
    if not match:
        sys.exit(f"TEST_MEMORY_LIMIT={setting!r}: give megabytes or gigabytes, like 4G or 3000M, or off")
    limit = int(match[1]) << (30 if match[2] == "G" else 20)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


FAST = ["-m", "fast", "-n", "0"]  # one process: starting xdist's would take longer than the tier


def pytest_selection(args: list[str]) -> list[str]:
    """`--fast` is the unit tier: the tests marked `fast` (pytest.ini), whatever else is asked
    for after it (a later -m or -n wins)."""
    return [*FAST, *(a for a in args if a != "--fast")] if "--fast" in args else args


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 2
    ensure_venv()
    os.chdir(ROOT)
    if argv[0] == "test":
        cap_memory(os.environ.get("TEST_MEMORY_LIMIT", TEST_MEMORY_LIMIT))
    args = pytest_selection(argv[1:]) if argv[0] == "test" else argv[1:]
    command = [str(PYTHON), *COMMANDS[argv[0]], *args]
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
