"""Real child processes for tests and benches: start, wait until they answer, stop or kill them.

Each child gets a process group of its own, so signals reach a gunicorn master and its
workers alike, and a Ctrl-C in the terminal reaches only the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_for(
    condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, message: str = "condition"
) -> object:
    """Poll `condition` until it answers something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class Service:
    """One child process with its output in a log file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, ready_url: str | None = None
    ) -> None:
        self.name, self.argv, self.env, self.ready_url = name, argv, env, ready_url
        self.log_path = Path(log_dir) / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.peak_rss_kb = 0  # the largest VmHWM seen in its process tree, sampled when signalled

    def start(self, timeout: float = 30.0) -> Service:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        if self.ready_url:
            wait_for(self._ready, timeout, 0.05, f"{self.name} to answer at {self.ready_url}")
        return self

    def _ready(self) -> bool:
        assert self.process is not None and self.ready_url is not None  # start() waits only then
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n{self.log()[-3000:]}")
        try:
            return httpx.get(self.ready_url, timeout=1).status_code < 500
        except httpx.TransportError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.process is not None:
            self.peak_rss_kb = max(self.peak_rss_kb, tree_peak_rss_kb(self.process.pid))
            try:
                os.killpg(self.process.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def kill(self) -> None:
        """SIGKILL the whole process group, at once."""
        self.signal(signal.SIGKILL)
        if self.process:
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group, then SIGKILL whatever of it is left after `timeout`."""
        if self.process is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


def tree_peak_rss_kb(pid: int) -> int:
    """The largest resident-set high-water mark (VmHWM) of a process and its descendants:
    each process's own peak, which its parent's getrusage cannot tell apart."""
    peak = 0
    try:
        tree = [psutil.Process(pid)]
        tree += tree[0].children(recursive=True)
    except psutil.Error:
        return 0
    for process in tree:
        try:
            with open(f"/proc/{process.pid}/status") as status:
                peak = max([peak] + [int(line.split()[1]) for line in status if line.startswith("VmHWM:")])
        except (OSError, ValueError):
            pass
    return peak


def gunicorn(app: str, config: str, bind: str) -> list[str]:
    return [str(BIN / "gunicorn"), "-c", config, "--bind", bind, app]


def python(*args: str) -> list[str]:
    return [sys.executable, *args]
