"""One Answerback on this machine: an embedded Redis, the Plivo sandbox, web under gunicorn and
RQ workers. The tests, the benches and `manage.py run` all build theirs from here, so this is the
one place that knows which environment each process needs and how to tell that it is up.

Web and workers share one environment (`app_env`): the Redis, the API keys, the upstream (the
sandbox, unless Plivo credentials are given) and the web's public URL (`web_env`), which workers put
into the callback URLs they hand to the upstream. Each is set explicitly: web and workers refuse to
start without them (config.Settings.check_start).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from redis import Redis

from local.processes import Service, gunicorn, python, wait_for
from local.redis_server import RedisServer
from sandbox.options import DEFAULT_AUTH_ID as SANDBOX_AUTH_ID


def local_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def sandbox_env(
    base: Mapping[str, str],
    port: int,
    auth_token: str,
    auth_id: str = SANDBOX_AUTH_ID,
    callback_delay: float | None = None,
) -> dict[str, str]:
    """The sandbox accepts the credentials web and workers are given (`app_env`) and signs its
    callbacks with that token, so web verifies them as it would Plivo's."""
    env = {
        **base,
        "SANDBOX_AUTH_ID": auth_id,
        "SANDBOX_AUTH_TOKEN": auth_token,
        "SANDBOX_BIND": f"127.0.0.1:{port}",
        "PYTHONUNBUFFERED": "1",
    }
    if callback_delay is not None:
        env["SANDBOX_CALLBACK_DELAY"] = str(callback_delay)
    return env


def app_env(
    base: Mapping[str, str],
    redis_url: str,
    api_keys: str,
    sandbox_port: int | None = None,
    auth_token: str = "",
    auth_id: str = SANDBOX_AUTH_ID,
    **settings: str,
) -> dict[str, str]:
    """The environment of web and workers. With `sandbox_port` the upstream is the sandbox there
    (PLIVO_*); without, whatever PLIVO_* `base` has. `settings` come last and win."""
    env = {**base, "PYTHONUNBUFFERED": "1", "REDIS_URL": redis_url, "API_KEYS": api_keys}
    if sandbox_port is not None:
        env.update(PLIVO_AUTH_ID=auth_id, PLIVO_AUTH_TOKEN=auth_token, PLIVO_API_URL=local_url(sandbox_port) + "/v1/")
    return {**env, **settings}


def web_env(env: Mapping[str, str], port: int, **settings: str) -> dict[str, str]:
    """`env` for a web listening on `port`; its public URL is its own address unless `env` names
    one (a web behind a proxy)."""
    return {"WEB_CONCURRENCY": "2", "PUBLIC_URL": local_url(port), **env, "PORT": str(port), **settings}


def start_sandbox(
    env: Mapping[str, str], log_dir: Path, port: int, conf: str = "sandbox/gunicorn_conf.py", name: str = "sandbox"
) -> Service:
    """The sandbox under gunicorn on `port`, once it answers."""
    return Service(
        name,
        gunicorn("sandbox.app:create_app()", conf, f"127.0.0.1:{port}"),
        dict(env),
        log_dir,
        local_url(port) + "/_sandbox/health",
    ).start()


def start_web(
    env: Mapping[str, str],
    log_dir: Path,
    name: str = "web",
    conf: str = "gunicorn.conf.py",
    app: str = "receiver:create_app()",
    wait: bool = True,
) -> Service:
    """A web (or another app, for a bench's baseline) under gunicorn on env's PORT, once it answers
    (`wait=False`: at once, for a web expected to refuse its settings and exit)."""
    port = int(env["PORT"])
    ready = local_url(port) + "/healthz" if wait else None
    return Service(name, gunicorn(app, conf, f"127.0.0.1:{port}"), dict(env), log_dir, ready).start()


def start_worker(env: Mapping[str, str], log_dir: Path, name: str = "worker", argv: list[str] | None = None) -> Service:
    """A worker process; it has no address, so `wait_registered` tells when it works."""
    return Service(name, argv or python("-m", "workers"), dict(env), log_dir).start()


def wait_registered(redis_url: str, workers: list[Service], timeout: float = 30) -> None:
    """Until RQ lists as many workers as were started; a worker that exits fails at once, with its log."""

    def registered() -> bool:
        for worker in workers:
            if not worker.alive:
                raise RuntimeError(f"{worker.name} exited; see {worker.log_path}:\n{worker.log()[-3000:]}")
        with Redis.from_url(redis_url) as client:
            return client.scard("rq:workers") >= len(workers)

    wait_for(registered, timeout, 0.05, f"{len(workers)} RQ workers to register")


Process = TypeVar("Process", Service, RedisServer)


class Processes:
    """What one stack started, stopped together: newest first, each whatever state the others are
    in. As a context manager it stops them when the block ends, by an error too."""

    def __init__(self) -> None:
        self.started: list[Service | RedisServer] = []

    def add(self, process: Process) -> Process:
        self.started.append(process)
        return process

    def stop(self) -> None:
        """Safe to call twice."""
        while self.started:
            process = self.started.pop()
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {getattr(process, 'name', 'redis')}: {exc!r}", file=sys.stderr)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
