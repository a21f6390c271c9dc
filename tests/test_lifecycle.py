"""The whole loop on real parts: submit over HTTP, a worker sends to the sandbox,
the sandbox calls back, the webhook matches, the client reads the result."""

from __future__ import annotations

import time

from local.processes import wait_for
from tests.support.api import submit, wait_status
from tests.support.services import AUTH_ID


def sandbox_requests_for(sandbox, rid):
    return [r for r in sandbox.requests() if r.get("rid") == rid]


def test_post_request_completes_with_the_sandbox_response(api, sandbox, worker):
    record = submit(
        api, "POST", "Call/", {"from": "14155550100", "to": "14155550101", "answer_url": "https://example.com/answer"}
    )
    assert record["status"] == "queued"
    done = wait_status(api, record["request_id"], "completed")
    assert done["api_id"] and done["response"]["api_id"] == done["api_id"]
    assert done["response"]["message"] == "call fired"
    assert done["attempts"] == 1 and done["late"] is False
    assert done["sent_at"] and done["completed_at"] and done["deadline"]
    [seen] = sandbox_requests_for(sandbox, record["request_id"])
    assert seen["method"] == "POST" and seen["auth_ok"] is True
    assert seen["content_type"].startswith("application/json")
    assert seen["json"]["to"] == "14155550101"
    assert seen["json"]["callback_method"] == "POST"
    assert seen["path"] == f"/v1/Account/{AUTH_ID}/Call/"


def test_get_and_delete_carry_their_arguments_in_the_query_string(api, sandbox, worker):
    listing = submit(api, "GET", "Call/", {"limit": 5, "offset": 0})
    done = wait_status(api, listing["request_id"], "completed")
    assert done["response"]["meta"]["limit"] == 5
    [seen] = sandbox_requests_for(sandbox, listing["request_id"])
    assert seen["method"] == "GET" and seen["json"] is None
    assert seen["query"]["limit"] in ("5", ["5"])
    assert "callback_url" in seen["query"]

    call = wait_status(api, submit(api)["request_id"], "completed")
    uuid = call["response"]["request_uuid"]
    deleted = submit(api, "delete", f"Call/{uuid}/", {"reason": "done"})
    done = wait_status(api, deleted["request_id"], "completed")
    assert done["method"] == "DELETE"
    [seen] = sandbox_requests_for(sandbox, deleted["request_id"])
    assert seen["method"] == "DELETE" and seen["query"]["reason"] in ("done", ["done"])


def test_callback_before_api_id_is_recorded_still_completes(api, sandbox, worker):
    sandbox.faults(early_callback={"rate": 1.0})
    record = submit(api)
    done = wait_status(api, record["request_id"], "completed")
    assert done["api_id"] == done["response"]["api_id"]
    assert done["deliveries"] == 1


def test_duplicate_callback_leaves_one_result(api, sandbox, worker, web):
    sandbox.faults(duplicate_callback={"rate": 1.0})
    record = submit(api)
    done = wait_status(api, record["request_id"], "completed")
    wait_for(lambda: sandbox.stats()["callbacks"]["delivered"] >= 2, message="both deliveries")
    again = api.get(f"/v1/requests/{record['request_id']}").json()
    assert again["deliveries"] == 1 and again["response"] == done["response"]
    assert sandbox.stats()["callbacks"]["by_status"] == {"200": 2}


def test_upstream_4xx_fails_with_the_upstream_body(api, worker):
    record = submit(api, "GET", "Call/00000000-0000-0000-0000-000000000000/", {})
    done = wait_status(api, record["request_id"], "failed")
    assert done["error"]["status"] == 404
    assert done["error"]["body"]["error"] == "not found"
    assert done["response"] is None


def test_get_callback_method_works(api, sandbox, worker):
    record = submit(api, callback_method="get")
    assert record["callback_method"] == "GET"
    done = wait_status(api, record["request_id"], "completed")
    assert done["response"]["message"] == "call fired"
    assert "rid" not in done["response"]
    [seen] = sandbox_requests_for(sandbox, record["request_id"])
    assert seen["json"]["callback_method"] == "GET"


def test_wait_returns_as_soon_as_the_request_completes(api, sandbox, worker):
    sandbox.faults(callback_delay={"rate": 1.0, "seconds": 1.0})
    record = submit(api)
    started = time.monotonic()
    done = api.get(f"/v1/requests/{record['request_id']}", params={"wait": 30}).json()
    assert done["status"] == "completed"
    assert time.monotonic() - started < 10


def test_wait_gives_up_after_n_seconds(api, sandbox, worker):
    sandbox.faults(drop_callback={"rate": 1.0})
    record = submit(api)
    wait_status(api, record["request_id"], "pending")
    started = time.monotonic()
    answer = api.get(f"/v1/requests/{record['request_id']}", params={"wait": 2}).json()
    assert answer["status"] == "pending"
    assert 2 <= time.monotonic() - started < 10


def test_results_by_api_id_wait_too(api, sandbox, worker):
    sandbox.faults(callback_delay={"rate": 1.0, "seconds": 1.0})
    record = submit(api)
    pending = wait_status(api, record["request_id"], {"pending", "completed"})
    done = api.get(f"/v1/results/{pending['api_id']}", params={"wait": 30}).json()
    assert done["status"] == "completed" and done["request_id"] == record["request_id"]


def test_a_request_not_sent_within_its_callback_timeout_is_never_sent(make_stack, sandbox):
    """No worker ran while its callback_timeout passed: the first worker to start expires it,
    and the upstream never sees it (a call placed that late is worse than none)."""
    stack = make_stack(db=14, workers=0)
    with stack.web.client() as api:
        record = submit(api, callback_timeout=1)
        submitted = time.monotonic()
        wait_for(lambda: time.monotonic() > submitted + 1.2, 5, message="the callback_timeout to pass")
        stack.start_worker()
        expired = wait_status(api, record["request_id"], "expired")
    assert expired["error"] == {"reason": "not sent within callback_timeout", "attempts": 0}
    assert expired["sent_at"] is None and expired["attempts"] == 0
    assert sandbox_requests_for(sandbox, record["request_id"]) == []
