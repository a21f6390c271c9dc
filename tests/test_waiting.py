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

from config import raise_fd_limit
from local.processes import wait_for
from store.records import Requests
from tests.conftest import KEY_A, KEY_B, submit, wait_status
from tests.test_callbacks import signed_headers

pytestmark = pytest.mark.slow

WAITERS = 1000


def held(stack) -> int:
    return int(stack.redis.hget("ab:metrics", "waits_held") or 0)


def callback(url: str, rid: str | None, api_id: str) -> tuple[str, bytes, dict[str, str]]:
    """(path and query, body, headers) of one signed JSON callback."""
    path = "/callbacks/plivo" + (f"?rid={rid}" if rid else "")
    body = {"api_id": api_id, "status": "completed"}
    return path, json.dumps(body).encode(), {"Content-Type": "application/json",
                                             **signed_headers("POST", url + path, body)}


async def post_callback(client: httpx.AsyncClient, url: str, rid: str | None) -> str:
    path, body, headers = callback(url, rid, str(uuid.uuid4()))
    answer = await client.post(path, content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["outcome"]


async def hold_then_finish(stack, rids: list[str]) -> tuple[list[str], list[httpx.Response]]:
    url = stack.web.url
    no_pool = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=90, limits=no_pool,
                                 headers={"Authorization": f"Bearer {KEY_A}"}) as clients, \
            httpx.AsyncClient(base_url=url, timeout=30) as webhook:
        waits = [asyncio.create_task(clients.get(f"/v1/requests/{rid}", params={"wait": 60})) for rid in rids]
        while held(stack) < len(rids):
            assert not any(w.done() for w in waits), "a waiter was answered before its request finished"
            await asyncio.sleep(0.05)
        early = [await post_callback(webhook, url, None) for _ in range(20)]
        assert not any(w.done() for w in waits)
        for start in range(0, len(rids), 50):
            await asyncio.gather(*(post_callback(webhook, url, rid) for rid in rids[start:start + 50]))
        return early, await asyncio.gather(*waits)


def test_a_thousand_waiters_are_all_held_and_answered_when_their_requests_finish(make_stack):
    raise_fd_limit()
    stack = make_stack(db=8, workers=0, WEB_CONCURRENCY="1")   # no worker: the requests stay queued
    with stack.web.client() as api:
        rids = [submit(api)["request_id"] for _ in range(WAITERS)]
    early, answers = asyncio.run(hold_then_finish(stack, rids))
    assert early == ["early"] * 20      # callbacks kept being stored while a thousand waited
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
    stack = make_stack(db=13, workers=0, WEB_CONCURRENCY="1", MAX_WAITERS="4")   # 2 a tenant
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


def web_worker(stack) -> psutil.Process:
    return psutil.Process(stack.web.service.pid).children()[0]


def test_sigterm_answers_every_waiter_at_once_and_finishes_a_callback_in_progress(make_stack):
    stack = make_stack(db=9, workers=0, WEB_CONCURRENCY="1")
    with stack.web.client() as api:
        rids = [submit(api)["request_id"] for _ in range(21)]
    target, rids = rids[0], rids[1:]

    def wait_once(rid):
        with stack.web.client() as client:
            started = time.monotonic()
            answer = client.get(f"/v1/requests/{rid}", params={"wait": 60})
            assert answer.headers["Connection"] == "close"   # begun before SIGTERM, answered after: not kept
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
        wait_for(lambda: any(c.raddr and c.raddr.port == ours for c in worker.net_connections()), 10,
                 message="web to take the callback's connection")
        stack.web.service.signal(signal.SIGTERM)
        answers = [w.result(timeout=30) for w in waits]
    assert {(status, state) for status, state, _ in answers} == {(200, "queued")}
    assert max(seconds for _, _, seconds in answers) < 60   # answered, not timed out
    sending.sendall(body[10:])
    reply = HTTPResponse(sending)
    reply.begin()
    assert (reply.status, json.loads(reply.read())) == (200, {"outcome": "matched"})
    assert reply.getheader("Connection") == "close"
    sending.close()
    stack.web.service.process.wait(timeout=30)
    assert Requests(stack.redis, 3600).get(target).status == "completed"
