"""Waiting holds thousands: one web process (gevent) holds every waiting client up to
MAX_WAITERS, answers each when its request finishes, keeps taking callbacks meanwhile,
answers waiters past the cap at once, and answers every waiter on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPResponse

import httpx
import psutil
import pytest

from config import FD_RESERVE, WEB_REDIS_POOLS, raise_fd_limit
from local.processes import wait_for
from local.redis_server import RedisServer, SentinelServer
from store.records import Requests
from tests.support.api import submit, wait_status
from tests.support.services import KEY_A, KEY_B, held, start_web, web_worker
from tests.support.signed_callbacks import callback, post_callback

pytestmark = pytest.mark.slow

WAITERS = 1000


async def hold_then_finish(stack, rids: list[str]) -> tuple[list[str], list[httpx.Response]]:
    url = stack.web.url
    no_pool = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(
            base_url=url, timeout=90, limits=no_pool, headers={"Authorization": f"Bearer {KEY_A}"}
        ) as clients,
        httpx.AsyncClient(base_url=url, timeout=30) as webhook,
    ):
        waits = [asyncio.create_task(clients.get(f"/v1/requests/{rid}", params={"wait": 60})) for rid in rids]
        while held(stack) < len(rids):
            assert not any(w.done() for w in waits), "a waiter was answered before its request finished"
            await asyncio.sleep(0.05)
        early = [await post_callback(webhook, url, None) for _ in range(20)]
        assert not any(w.done() for w in waits)
        for start in range(0, len(rids), 50):
            await asyncio.gather(*(post_callback(webhook, url, rid) for rid in rids[start : start + 50]))
        return early, await asyncio.gather(*waits)


def test_a_thousand_waiters_are_all_held_and_answered_when_their_requests_finish(make_stack):
    raise_fd_limit()
    stack = make_stack(db=8, workers=0, WEB_CONCURRENCY="1")  # no worker: the requests stay queued
    with stack.web.client() as api:
        rids = [submit(api)["request_id"] for _ in range(WAITERS)]
    early, answers = asyncio.run(hold_then_finish(stack, rids))
    assert early == ["early"] * 20  # callbacks kept being stored while a thousand waited
    assert [a.status_code for a in answers] == [200] * WAITERS
    assert not [a for a in answers if "X-Wait-Capped" in a.headers]
    assert [a.json()["request_id"] for a in answers] == rids
    assert {a.json()["status"] for a in answers} == {"completed"}
    assert held(stack) == WAITERS and stack.redis.hget("ab:metrics", "waits_capped") is None


def test_waiters_past_the_cap_answer_at_once_and_callbacks_still_get_through(make_stack, sandbox):
    stack = make_stack(db=7, WEB_CONCURRENCY="1", MAX_WAITERS="4", MAX_WAITERS_PER_TENANT="4")
    sandbox.faults(drop_callback=1.0)
    with stack.web.client() as api:
        record = wait_status(api, submit(api)["request_id"], "pending")
        rid = record["request_id"]

        def wait_once(_):
            with stack.web.client() as client:
                answer = client.get(f"/v1/requests/{rid}", params={"wait": 30})
                return answer.headers.get("X-Wait-Capped"), answer.json()["status"]

        with ThreadPoolExecutor(10) as pool:
            waits = [pool.submit(wait_once, i) for i in range(10)]
            wait_for(lambda: sum(w.done() for w in waits) >= 6, 30, message="the waiters past the cap to be answered")
            capped = [w.result() for w in waits if w.done()]
            assert all(c == ("true", "pending") for c in capped) and len(capped) == 6
            path, body, headers = callback(stack.web.url, rid, record["api_id"])
            with stack.web.client(key=None) as webhook:
                assert webhook.post(path, content=body, headers=headers).json() == {"outcome": "matched"}
            held_answers = [w.result(timeout=10) for w in waits if w.result(timeout=10)[0] is None]
        assert held_answers == [(None, "completed")] * 4
    assert int(stack.redis.hget("ab:metrics", "waits_capped")) == 6


def test_one_tenant_holds_at_most_its_share_of_the_waiters(make_stack):
    """MAX_WAITERS_PER_TENANT (by default half of MAX_WAITERS): one tenant's crowd of waiters
    cannot take the slots of the others."""
    stack = make_stack(db=13, workers=0, WEB_CONCURRENCY="1", MAX_WAITERS="4")  # 2 a tenant
    with stack.web.client(KEY_A) as api_a, stack.web.client(KEY_B) as api_b:
        ours = {KEY_A: submit(api_a)["request_id"], KEY_B: submit(api_b)["request_id"]}

    def wait_once(key):
        with stack.web.client(key) as client:
            answer = client.get(f"/v1/requests/{ours[key]}", params={"wait": 2})
            return key, answer.headers.get("X-Wait-Capped") == "true"

    with ThreadPoolExecutor(5) as pool:
        tenant_a = [pool.submit(wait_once, KEY_A) for _ in range(3)]
        wait_for(lambda: sum(w.done() for w in tenant_a) == 1, 30, message="A's third waiter to be capped")
        tenant_b = [pool.submit(wait_once, KEY_B) for _ in range(2)]
        answers = [w.result() for w in tenant_a + tenant_b]
    assert sorted(answers) == [(KEY_A, False), (KEY_A, False), (KEY_A, True), (KEY_B, False), (KEY_B, False)]
    assert (held(stack), int(stack.redis.hget("ab:metrics", "waits_capped"))) == (4, 1)


def test_sigterm_answers_every_waiter_at_once_and_finishes_a_callback_in_progress(make_stack):
    stack = make_stack(db=9, workers=0, WEB_CONCURRENCY="1")
    with stack.web.client() as api:
        rids = [submit(api)["request_id"] for _ in range(21)]
    target, rids = rids[0], rids[1:]

    def wait_once(rid):
        with stack.web.client() as client:
            started = time.monotonic()
            answer = client.get(f"/v1/requests/{rid}", params={"wait": 60})
            assert answer.headers["Connection"] == "close"  # begun before SIGTERM, answered after: not kept
            return answer.status_code, answer.json()["status"], time.monotonic() - started

    with ThreadPoolExecutor(len(rids)) as pool:
        waits = [pool.submit(wait_once, rid) for rid in rids]
        wait_for(lambda: held(stack) == len(rids), 30, message="every waiter to be held")
        path, body, headers = callback(stack.web.url, target, str(uuid.uuid4()))
        port = int(stack.web.url.rsplit(":", 1)[1])
        sending = socket.create_connection(("127.0.0.1", port), timeout=30)
        head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": len(body)}.items())
        sending.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode() + body[:10])
        ours = sending.getsockname()[1]
        worker = web_worker(stack)
        wait_for(
            lambda: any(c.raddr and c.raddr.port == ours for c in worker.net_connections()),
            10,
            message="web to take the callback's connection",
        )
        stack.web.service.signal(signal.SIGTERM)
        answers = [w.result(timeout=30) for w in waits]
    assert {(status, state) for status, state, _ in answers} == {(200, "queued")}
    assert max(seconds for _, _, seconds in answers) < 60  # answered, not timed out
    sending.sendall(body[10:])
    reply = HTTPResponse(sending)
    reply.begin()
    assert (reply.status, json.loads(reply.read())) == (200, {"outcome": "matched"})
    assert reply.getheader("Connection") == "close"
    sending.close()
    stack.web.service.process.wait(timeout=30)
    assert Requests(stack.redis, 3600).get(target).status == "completed"


def tcp_table(port: int) -> list[tuple[int, int, int]]:
    """(state, remote port, bytes unread) of each socket listed in /proc/net/tcp on local `port`."""
    found = []
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
            if local == port:
                found.append((int(fields[3], 16), remote, int(fields[4].split(":")[1], 16)))
    return found


ESTABLISHED = 1


def all_read(port: int, n: int) -> bool:
    """Whether web on `port` holds `n` client connections and has read everything sent on each."""
    established = [unread for state, _, unread in tcp_table(port) if state == ESTABLISHED]
    return len(established) >= n and not any(established)


def raw_request(method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": len(body)}.items())
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode() + body


def status_of(sock: socket.socket) -> int:
    reply = HTTPResponse(sock)
    reply.begin()
    reply.read()
    return reply.status


def to_redis(worker: psutil.Process, redis_port: int) -> int:
    return sum(1 for c in worker.net_connections("tcp") if c.raddr and c.raddr.port == redis_port)


@pytest.mark.parametrize("sentinel", [False, True], ids=["plain", "sentinel"])
def test_web_holds_no_more_redis_connections_than_its_pools_and_reserves_their_descriptors(base_env, workdir, sentinel):
    """130 requests of each kind at once (reads, waits, callbacks: one Redis pool each) while
    Redis hangs, so that each holds a Redis connection or queues for one: web opens no more
    than its pools' sizes, with Sentinel as without it, everything it holds beside client
    sockets fits the descriptors it reserves (FD_RESERVE), and every request is answered once
    Redis is back."""
    root = workdir / f"pools-{uuid.uuid4().hex[:6]}"
    primary = RedisServer(root / "primary").start()
    sentinels = [SentinelServer(root / "sentinel", primary.port, down_after_ms=60000).start()] if sentinel else []
    env = {**base_env, "REDIS_URL": primary.url}
    if sentinel:
        env.update(REDIS_URL="redis://localhost/0", REDIS_SENTINELS=f"127.0.0.1:{sentinels[0].port}")
    web = start_web(env, workdir, f"web-pools-{'sentinel' if sentinel else 'plain'}", WEB_CONCURRENCY="1")
    web_port = int(web.url.rsplit(":", 1)[1])
    auth = {"Authorization": f"Bearer {KEY_A}"}
    full = sum(WEB_REDIS_POOLS[pool] for pool in ("requests", "waiters", "callbacks", "listener"))
    try:
        with web.client() as api:
            rid = submit(api)["request_id"]
        reads = [("GET", f"/v1/requests/{rid}", b"", auth)] * 130
        waits = [("GET", f"/v1/requests/{rid}?wait=1", b"", auth)] * 130
        callbacks = [("POST", *callback(web.url, None, str(uuid.uuid4()))) for _ in range(130)]
        worker = psutil.Process(web.service.pid).children()[0]
        senders: list[socket.socket] = []
        primary.pause()
        try:
            for request in reads + waits + callbacks:
                senders.append(socket.create_connection(("127.0.0.1", web_port), timeout=60))
                senders[-1].sendall(raw_request(*request))
            wait_for(
                lambda: all_read(web_port, 390) and to_redis(worker, primary.port) >= full,
                30,
                message="every pool of web to be in use",
            )
            conns = worker.net_connections("tcp")
            redis_connections = sum(1 for c in conns if c.raddr and c.raddr.port == primary.port)
            beside_clients = worker.num_fds() - sum(1 for c in conns if c.laddr.port == web_port and c.raddr)
            primary.resume()
            statuses = [status_of(sock) for sock in senders]
        finally:
            primary.resume()
            for sock in senders:
                sock.close()
    finally:
        web.service.stop()
        for server in [*sentinels, primary]:
            server.stop()
    assert redis_connections <= sum(WEB_REDIS_POOLS.values()), redis_connections
    assert beside_clients <= FD_RESERVE, (beside_clients, FD_RESERVE)
    assert statuses == [200] * 390, sorted(set(statuses))
