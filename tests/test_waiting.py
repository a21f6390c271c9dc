"""Waiting is bounded: waiters hold at most WAIT_SHARE of a web process's
threads, past that a wait answers at once, and callbacks keep being taken."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import submit, wait_status
from local.processes import wait_for
from tests.test_callbacks import signed_headers

pytestmark = pytest.mark.slow


def test_waiters_past_the_cap_answer_at_once_and_callbacks_still_get_through(make_stack, sandbox):
    stack = make_stack(db=7, WEB_CONCURRENCY="1", WEB_THREADS="8", WAIT_SHARE="0.5")
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
            path = f"/callbacks/plivo?rid={rid}"
            body = {"api_id": record["api_id"], "status": "done"}
            with stack.web.client(key=None) as webhook:
                answer = webhook.post(path, content=json.dumps(body), headers={
                    "Content-Type": "application/json", **signed_headers("POST", stack.web.url + path, body)})
            assert answer.json() == {"outcome": "matched"}
            held = [w.result(timeout=10) for w in waits if w.result(timeout=10)[0] is None]
        assert held == [(None, "completed")] * 4
    assert int(stack.redis.hget("ab:metrics", "waits_capped")) == 6
