"""The real pieces, started once per session: Redis, the Plivo sandbox, web (gunicorn), a
worker; and stacks of web and workers on a database of their own, for tests that kill or
reconfigure processes. State is reset between tests (`clean_state`). Registered as a pytest
plugin by tests/conftest.py, so every test can ask for these fixtures by name."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from redis import Redis
from rq import Queue
from rq.job import JobStatus
from rq.registry import StartedJobRegistry

from config import Settings
from local import stack as local_stack
from local.processes import Service, wait_for
from local.redis_server import RedisServer, free_port
from store import connect, keys, metrics
from store.connection import connect_store, redis_target
from tests.support.memory import track

AUTH_ID = local_stack.SANDBOX_AUTH_ID
AUTH_TOKEN = "sandbox-test-token"
KEY_A, KEY_B = "test-key-a", "test-key-b"
STARTS = itertools.count(1)  # see unique()
STARTED: dict[str, Any] = {}  # session services already running, for clean_state


class Sandbox:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = url = local_stack.local_url(port)
        self.api_url = url + "/v1/"
        self.http = httpx.Client(base_url=url, timeout=10)

    def faults(self, **settings: Any) -> None:
        self.http.post("/_sandbox/faults", json=settings).raise_for_status()

    def reset(self) -> None:
        self.http.delete("/_sandbox/faults").raise_for_status()
        self.http.delete("/_sandbox/stats").raise_for_status()

    def stats(self) -> dict[str, Any]:
        return self.http.get("/_sandbox/stats").json()

    def requests(self, limit: int = 10000) -> list[dict[str, Any]]:
        return self.http.get("/_sandbox/requests", params={"limit": limit}).json()["requests"]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("answerback")


@pytest.fixture(scope="session")
def redis_server(workdir) -> Iterator[RedisServer]:
    server = RedisServer(workdir / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis(redis_server):
    client = connect(redis_server.url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox(workdir) -> Iterator[Sandbox]:
    port = free_port()
    env = local_stack.sandbox_env(os.environ, port, AUTH_TOKEN, callback_delay=0.05)
    service = track(local_stack.start_sandbox(env, workdir, port))
    box = STARTED["sandbox"] = Sandbox(port)
    yield box
    STARTED.pop("sandbox")
    box.http.close()
    service.stop()


@pytest.fixture(scope="session")
def base_env(redis_server, sandbox) -> dict[str, str]:
    """What web and workers of the session share; each web adds its own port and URL."""
    return local_stack.app_env(
        os.environ,
        redis_server.url,
        f"{KEY_A},{KEY_B}",
        sandbox.port,
        AUTH_TOKEN,
        PLIVO_TIMEOUT="5",
        ACCESS_LOG="-",
        ADMIN_API_KEYS=KEY_B,  # also a tenant's key: the console signs in with one key
        RATE_LIMIT_CALLS="500/1",
        RATE_LIMIT_API="2000/1",
    )


class Web:
    def __init__(self, service: Service, url: str) -> None:
        self.service, self.url = service, url

    def client(self, key: str | None = KEY_A) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=90)


def unique(name: str) -> str:
    """A service's name, and so its log file (appended to), for this start only: two tests that
    start a service under one name would otherwise read each other's log lines."""
    return f"{name}-{next(STARTS)}"


def start_web(base_env: dict[str, str], workdir: Path, name: str = "web", **overrides: str) -> Web:
    port = free_port()
    service = track(local_stack.start_web(local_stack.web_env(base_env, port, **overrides), workdir, unique(name)))
    return Web(service, local_stack.local_url(port))


def start_worker(base_env: dict[str, str], workdir: Path, name: str = "worker", **overrides: str) -> Service:
    return track(local_stack.start_worker({**base_env, **overrides}, workdir, unique(name)))


@pytest.fixture(scope="session")
def web(base_env, workdir) -> Iterator[Web]:
    server = start_web(base_env, workdir)
    yield server
    server.service.stop()


@pytest.fixture(scope="session")
def worker(base_env, workdir, web) -> Iterator[Service]:
    """Callbacks of the requests it sends go to the session's web."""
    service = start_worker(base_env, workdir, PUBLIC_URL=web.url)
    STARTED["worker"] = Redis.from_url(base_env["REDIS_URL"])  # RQ's own client: bytes, not text
    yield service
    STARTED.pop("worker").close()
    service.stop()


def forget_unrung_drainers(redis, queue: Queue) -> None:
    """A submission made in the test's own process (`Requests(redis, ...).submit`, as many
    tests do) registers its ring id as a drainer, but only web enqueues the drain job that
    id names; no job will ever beat for it, and the gauge counts it until it is stale (15 s).
    Forgotten here once it is 250 ms old and no drain job of that id is queued or running
    (a worker enqueues the job it rings within milliseconds of registering it)."""
    old_enough = int(time.time() * 1000) - 250
    for ring_id in redis.zrangebyscore(keys.DRAINERS, "-inf", old_enough):
        job = queue.fetch_job(ring_id)
        if job is None or job.get_status(refresh=False) not in (JobStatus.QUEUED, JobStatus.STARTED):
            redis.zrem(keys.DRAINERS, ring_id)


def wait_for_quiet_worker(redis, sandbox: Sandbox) -> None:
    """The session's worker shares DB 0 with the tests and keeps writing while a send it
    started is in flight (its answer, the callback the sandbox then makes to web). Before a
    test's state is flushed, the work not yet started is dropped, faults are lifted, and then
    everything in flight is waited for: no leased request, no drain job registered, queued or
    running, no callback the sandbox still has to make. After that nothing writes to DB 0
    but the sweep's lock and counters."""
    queue = Queue("answerback", connection=STARTED["worker"])
    running = StartedJobRegistry(queue=queue)
    unstarted = [keys.outbox(api_class) for api_class in keys.API_CLASSES] + [keys.RETRY, keys.NOTIFY_DUE]
    sandbox.http.delete("/_sandbox/faults").raise_for_status()

    left: dict[str, int] = {}

    def quiet() -> bool:
        redis.delete(*unstarted)  # a send that ended in a retry schedules it again
        forget_unrung_drainers(redis, queue)
        _, gauges, _ = metrics.snapshot(redis)
        left.update(
            in_flight=gauges["in_flight"],
            drainers=gauges["drainers"],
            queued_jobs=queue.count,
            running_jobs=running.count,
            sandbox_callbacks=sandbox.stats()["callbacks"]["pending"],
        )
        return not any(left.values())

    try:
        wait_for(quiet, 60, 0.05, "the session's worker to finish what the last test left in flight")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: still {left}") from None


def clear(client: Redis, pattern: str = keys.PREFIX + "*") -> None:
    """Empty a database that running web processes use of Answerback's keys (`pattern`: "*"
    for RQ's too), but for the tenant salt (each web process holds it once read: a second one
    would give the same key another tenant, see docs/operations.md) and the heartbeats (else
    a worker looks dead until its next beat)."""
    kept = (keys.TENANT_SALT, keys.PROCESSES, keys.PROCESS_BEATS)
    stale = [k for k in client.scan_iter(pattern, count=1000) if k not in kept]
    if stale:
        client.delete(*stale)


@pytest.fixture(autouse=True)
def clean_state(request) -> None:
    """Every test starts with no Answerback keys in Redis and a sandbox without faults."""
    names = request.fixturenames
    if STARTED.get("sandbox"):
        sandbox = STARTED["sandbox"]
        if STARTED.get("worker"):
            wait_for_quiet_worker(request.getfixturevalue("redis"), sandbox)
        wait_for(
            lambda: sandbox.stats()["callbacks"]["pending"] == 0,
            30,
            message="the sandbox to finish the last test's callbacks",
        )
    if "redis" in names or "web" in names or "worker" in names:
        clear(request.getfixturevalue("redis"))
    if "sandbox" in names or "worker" in names:
        request.getfixturevalue("sandbox").reset()


@pytest.fixture
def api(web) -> Iterator[httpx.Client]:
    with web.client(KEY_A) as client:
        yield client


@pytest.fixture
def api_b(web) -> Iterator[httpx.Client]:
    with web.client(KEY_B) as client:
        yield client


class Stack:
    """A web and its workers on a Redis database of their own, for tests that
    kill, restart or reconfigure processes without touching the session's."""

    def __init__(self, env: dict[str, str], workdir: Path, db: int) -> None:
        self.env, self.workdir, self.db = env, workdir, db
        self.web: Web | None = None
        self.workers: list[Service] = []
        self.redis = connect_store(redis_target(Settings.from_env(env)))  # a cluster's, with REDIS_CLUSTER_NODES

    def start_web(self) -> Web:
        self.web = start_web(self.env, self.workdir, f"web-db{self.db}")
        return self.web

    def start_worker(self, **overrides: str) -> Service:
        name = f"worker-db{self.db}-{len(self.workers)}"
        worker = start_worker(self.env, self.workdir, name, PUBLIC_URL=self.web.url, **overrides)
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.kill()
        if self.web:
            self.web.service.stop()
        self.redis.close()


@pytest.fixture
def make_stack(base_env, workdir, redis_server) -> Iterator[Any]:
    stacks: list[Stack] = []

    def make(db: int = 1, workers: int = 1, **overrides: str) -> Stack:
        env = {
            **base_env,
            "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/{db}",
            "SWEEP_INTERVAL": "1",
            "LEASE_SECONDS": "3",
            "DRAINER_STALE_SECONDS": "2",
            **overrides,
        }
        stack = Stack(env, workdir, db)
        stack.redis.flushdb()
        stacks.append(stack)
        stack.start_web()
        for _ in range(workers):
            stack.start_worker()
        return stack

    yield make
    for stack in stacks:
        stack.stop()


def held(stack: Stack) -> int:
    """Waiters a stack's web has held so far (its counter in Redis)."""
    return int(stack.redis.hget(keys.METRICS, "waits_held") or 0)


def web_worker(stack: Stack) -> psutil.Process:
    """The gunicorn worker process of a stack's web (its one child)."""
    return psutil.Process(stack.web.service.pid).children()[0]
