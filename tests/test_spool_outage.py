"""The spool through a long outage, on a real web (one gevent worker) and a real Redis:
one file and a flat count of descriptors however many replays fail, an fsync that does
not stop the worker's other connections, and a bad entry that does not hold up the rest.

A long outage is compressed honestly: the replayer's pause (SPOOL_REPLAY_INTERVAL) is
shortened so that many replays fail between two callbacks, as at one callback a second
with the production pause, and CALLBACK_HOLD is 0 so that each callback is spooled at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from local.processes import wait_for
from local.redis_server import RedisServer
from receiver.spool import DEAD_LETTERS, SUFFIX
from store.records import new_id
from tests.support.services import Web, start_web
from tests.support.signed_callbacks import delivery

pytestmark = pytest.mark.slow

FAILED_ROUND = "spool replay waits for Redis"


@pytest.fixture
def own_redis(workdir):
    server = RedisServer(workdir / f"redis-spool-{uuid.uuid4().hex[:6]}").start()
    yield server
    server.stop()


def spool_web(base_env: dict, workdir: Path, server: RedisServer, spool: Path, **settings: str) -> Web:
    """A web of one gevent worker spooling at once (no hold), at debug level so that each
    failed replay is logged."""
    return start_web(
        {**base_env, "REDIS_URL": server.url},
        workdir,
        f"web-spool-{uuid.uuid4().hex[:6]}",
        SPOOL_DIR=str(spool),
        CALLBACK_HOLD="0",
        WEB_CONCURRENCY="1",
        LOG_LEVEL="debug",
        **settings,
    )


def worker_pid(web: Web) -> int:
    """The pid of the web's one gunicorn worker (the master's only child)."""
    master = web.service.pid

    def child() -> int | None:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return int(children[0]) if len(children) == 1 else None

    return wait_for(child, 10, message="the web's one worker")


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def spool_files(spool: Path) -> list[Path]:
    return [p for p in spool.iterdir() if p.suffix == SUFFIX] if spool.exists() else []


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def callback(client: httpx.Client, web: Web) -> str:
    answer = delivery(client, web.url, {"request_id": str(uuid.uuid4()), "api_id": str(uuid.uuid4())})
    assert answer is not None and answer.status_code == 200, answer and answer.text
    return answer.json()["outcome"]


def test_a_long_outage_keeps_one_spool_file_and_flat_descriptors(base_env, workdir, own_redis):
    callbacks, rounds_between = 60, 3
    spool = workdir / f"spool-{uuid.uuid4().hex[:6]}"
    web = spool_web(base_env, workdir, own_redis, spool, SPOOL_REPLAY_INTERVAL="0.02")
    try:
        pid = worker_pid(web)
        own_redis.kill()
        files, fds = [], []
        with web.client(key=None) as client:
            for _ in range(callbacks):
                assert callback(client, web) == "spooled"
                failed = web.service.log().count(FAILED_ROUND)
                wait_for(
                    lambda failed=failed: web.service.log().count(FAILED_ROUND) >= failed + rounds_between,
                    30,
                    message=f"{rounds_between} more replays to fail",
                )
                files.append(len(spool_files(spool)))
                fds.append(descriptors(pid))
        with web.client() as api:
            during = api.get("/metrics").text
        rounds = web.service.log().count(FAILED_ROUND)
        print(
            f"\nspool outage: {callbacks} callbacks spooled across {rounds} failed replays; "
            f"spool files {min(files)}..{max(files)}, worker descriptors {min(fds)}..{max(fds)}"
        )
        assert files == [1] * callbacks
        # A descriptor may be open for a moment as it is read (a Redis connection being
        # refused, a directory being fsynced): flat means no more than that, not one per round.
        assert max(fds) - fds[0] <= 2, fds
        assert metric(during, "answerback_spool_entries") == callbacks
        own_redis.start()
        wait_for(lambda: not spool_files(spool), 30, 0.05, "the spool to be replayed")
        with web.client() as api:
            after = api.get("/metrics").text
        assert metric(after, "answerback_spool_replays_total") == callbacks  # each once: none lost, none twice
        assert metric(after, "answerback_spool_entries") == 0
        assert len(list(spool.iterdir())) == 0
    finally:
        web.service.stop()


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace delays the fsyncs; it is not installed")
def test_a_slow_fsync_does_not_stall_the_workers_other_connections(base_env, workdir, own_redis):
    """While a spooled callback's fsync takes `delay_s`, web answers its other connections: the
    fsync is on no thread of the hub, and no /healthz waits for one. A hub that ran the fsync
    would keep the probe sent as it starts waiting nearly all of `delay_s` (the probes run back
    to back); the bound leaves room for a busy machine's scheduling (strace stops the process at
    every system call, and other tests' processes share the 2 cores), which once held a probe
    346 ms while the fsyncs were delayed 0.5 s, so the delay is long enough to tell the two apart."""
    delay_s, spooled = 1.0, 4
    spool = workdir / f"spool-{uuid.uuid4().hex[:6]}"
    web = spool_web(base_env, workdir, own_redis, spool)
    trace, attach_log = workdir / f"fsync-{uuid.uuid4().hex[:6]}.trace", workdir / "strace.log"
    tracer = None
    try:
        pid = worker_pid(web)
        own_redis.kill()
        with open(attach_log, "wb") as stderr:
            tracer = subprocess.Popen(
                [
                    "strace",
                    "-f",
                    "-e",
                    "trace=fsync",
                    "-o",
                    str(trace),
                    "-e",
                    f"inject=fsync:delay_enter={int(delay_s * 1e6)}",
                    "-p",
                    str(pid),
                ],
                stderr=stderr,
            )
        wait_for(
            lambda: "attached" in attach_log.read_text() or tracer.poll() is not None, 10, message="strace to attach"
        )
        if tracer.poll() is not None:
            pytest.skip(f"strace cannot attach here: {attach_log.read_text()[-300:]}")
        with web.client(key=None) as client:
            baseline = [healthz(client) for _ in range(40)]
            held: list[float] = []

            def spool_some() -> None:
                with web.client(key=None) as sender:
                    for _ in range(spooled):
                        started = time.monotonic()
                        assert callback(sender, web) == "spooled"
                        held.append(time.monotonic() - started)

            sender = threading.Thread(target=spool_some)
            sender.start()
            during = []
            while sender.is_alive():
                during.append(healthz(client))
            sender.join()
        tracer.terminate()
        tracer.wait(10)
        fsyncs = [line.split() for line in trace.read_text().splitlines() if "fsync(" in line]
        on_the_hub = [line for line in fsyncs if int(line[0]) == pid]
        print(
            f"\nspool fsync delayed {delay_s} s: callbacks answered in {min(held):.2f}..{max(held):.2f} s; "
            f"/healthz worst {max(baseline) * 1000:.0f} ms before, {max(during) * 1000:.0f} ms during "
            f"({len(during)} requests); fsyncs {len(fsyncs)}, on the hub's thread {len(on_the_hub)}"
        )
        assert len(held) == spooled and min(held) >= delay_s  # the answer waits for its fsync
        assert on_the_hub == [] and len(fsyncs) >= spooled
        assert max(during) < max(baseline) + delay_s * 0.7
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.kill()
        web.service.stop()


def healthz(client: httpx.Client) -> float:
    started = time.monotonic()
    assert client.get("/healthz").status_code == 200
    return time.monotonic() - started


def test_a_bad_entry_is_kept_aside_and_the_rest_replayed(base_env, workdir, own_redis):
    """A file left by a web that is gone, with two entries the store cannot take among good ones."""
    spool = workdir / f"spool-{uuid.uuid4().hex[:6]}"
    spool.mkdir()
    good = [
        {
            "rid": str(uuid.uuid4()),
            "api_id": str(uuid.uuid4()),
            "body": {"n": n},
            "method": "POST",
            "nonce": "",
            "received_at": int(time.time() * 1000),
        }
        for n in range(4)
    ]
    bad = [{"api_id": str(uuid.uuid4()), "not_a_field": 1}, ["not", "an", "object"]]
    lines = [good[0], bad[0], good[1], good[2], bad[1], good[3]]
    (spool / f"{new_id()}{SUFFIX}").write_text("".join(json.dumps(line) + "\n" for line in lines))
    web = spool_web(base_env, workdir, own_redis, spool, SPOOL_REPLAY_INTERVAL="0.1")
    try:
        wait_for(lambda: not spool_files(spool), 30, 0.05, "the spool to be replayed")
        with web.client() as api:
            metrics = api.get("/metrics").text
        assert metric(metrics, "answerback_spool_replays_total") == len(good)
        assert metric(metrics, "answerback_spool_dead_letters") == len(bad)
        dead = [json.loads(line) for line in (spool / DEAD_LETTERS).read_text().splitlines()]
        assert [json.loads(d["entry"]) for d in dead] == bad
        assert dead[0]["error"].startswith("TypeError")
    finally:
        web.service.stop()
