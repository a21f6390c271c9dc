"""The real processes a bench runs against, started and always cleaned up by the bench itself.

Every child gets a session (process group) of its own, so a Ctrl-C in the terminal
reaches only the bench, and cleanup can signal a whole group (gunicorn master and
its workers) by the leader's pid (local/processes.py, shared with the tests).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import NoReturn

from local import stack as local_stack
from local.processes import Service
from local.redis_server import RedisServer, free_port
from sandbox.options import DEFAULT_AUTH_ID as SANDBOX_AUTH_ID

ROOT = Path(__file__).resolve().parent.parent
AUTH_ID = SANDBOX_AUTH_ID
AUTH_TOKEN = "bench-sandbox-token"
API_KEY = "bench-key"
TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """user+system CPU of every live process in process group `pgid` (threads included)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5, pgrp
            total += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return total / TICKS


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / TICKS, sum(values) / TICKS


class Stack:
    """Embedded Redis, the sandbox, web (gunicorn) and W worker processes, in a temp dir."""

    def __init__(
        self,
        workers: int,
        send_concurrency: int,
        callback_delay: float = 0.01,
        web_processes: int = 2,
        keep_dir: bool = False,
        extra_env: dict[str, str] | None = None,
        web_conf: str = "gunicorn.conf.py",
        sandbox_conf: str = "sandbox/gunicorn_conf.py",
        worker_argv: list[str] | None = None,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="answerback-bench-"))
        self.n_workers, self.send_concurrency = workers, send_concurrency
        self.callback_delay, self.web_processes = callback_delay, web_processes
        self.keep_dir, self.extra_env = keep_dir, extra_env or {}
        self.web_conf, self.sandbox_conf = web_conf, sandbox_conf
        self.worker_argv = worker_argv
        self.started = local_stack.Processes()
        self.redis: RedisServer | None = None
        self.sandbox: Service | None = None
        self.web: Service | None = None
        self.workers: list[Service] = []
        self.sandbox_url = self.web_url = self.redis_url = ""
        self.extra_groups: dict[str, list[int]] = {}  # name -> pgids the bench started besides the stack

    # -- starting ---------------------------------------------------------------------------
    def start(self) -> Stack:
        self.redis = self.started.add(RedisServer(self.dir / "redis").start())
        self.redis_url = self.redis.url
        base = {**os.environ, **self.extra_env}
        sandbox_port, port = free_port(), free_port()
        self.sandbox_url, self.web_url = local_stack.local_url(sandbox_port), local_stack.local_url(port)
        self.sandbox = self.started.add(
            local_stack.start_sandbox(
                local_stack.sandbox_env(base, sandbox_port, AUTH_TOKEN, callback_delay=self.callback_delay),
                self.dir,
                sandbox_port,
                self.sandbox_conf,
            )
        )
        self.env = local_stack.web_env(
            local_stack.app_env(
                base,
                self.redis_url,
                API_KEY,
                sandbox_port,
                AUTH_TOKEN,
                RATE_LIMIT_API="100000/1",
                RATE_LIMIT_CALLS="100000/1",
                SEND_CONCURRENCY=str(self.send_concurrency),
                WEB_CONCURRENCY=str(self.web_processes),
                **self.extra_env,
            ),
            port,
        )
        self.web = self.started.add(local_stack.start_web(self.env, self.dir, conf=self.web_conf))
        for i in range(self.n_workers):
            self.workers.append(
                self.started.add(local_stack.start_worker(self.env, self.dir, f"worker-{i}", self.worker_argv))
            )
        local_stack.wait_registered(self.redis_url, self.workers)
        return self

    # -- observing --------------------------------------------------------------------------
    def processes(self) -> dict[str, int]:
        """name -> process-group id of everything this stack started."""
        found = {
            "redis": self.redis.process.pid if self.redis and self.redis.process else None,
            "sandbox": self.sandbox.pid if self.sandbox else None,
            "web": self.web.pid if self.web else None,
        }
        found |= {w.name: w.pid for w in self.workers}
        return {name: pid for name, pid in found.items() if pid}

    def cpu(self) -> dict[str, float]:
        usage = {name: group_cpu_seconds(pgid) for name, pgid in self.processes().items()}
        usage |= {name: sum(group_cpu_seconds(pgid) for pgid in pgids) for name, pgids in self.extra_groups.items()}
        usage["bench"] = sum(os.times()[:2])
        return usage

    # -- stopping ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Every process, whatever state it is in; safe to call twice."""
        self.started.stop()
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.keep_dir = True
            print(f"bench: start failed; logs kept in {self.dir}", file=sys.stderr)
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None and exc_type is not KeyboardInterrupt:
            self.keep_dir = True
            print(f"bench: logs kept in {self.dir}", file=sys.stderr)
        self.stop()


def terminate_on_signals(stop: threading.Event | None = None) -> None:
    """Ctrl-C, SIGTERM and SIGHUP set `stop` (client threads finish their current request and
    quit) and unwind as KeyboardInterrupt, so every `finally` (and Stack.stop) runs."""

    def unwind(signum: int, frame: FrameType | None) -> NoReturn:
        if stop is not None:
            stop.set()
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, unwind)
