"""A request's timeline (`GET /v1/requests/{id}/events`, store/events.py) on real parts: the
session's web, worker and sandbox, its faults for failed attempts and duplicate callbacks, and
callbacks signed or forged by the test itself."""

from __future__ import annotations

import json
import uuid

import pytest

from local.processes import wait_for
from store import connect, keys
from store.deliveries import Deliveries
from store.events import build
from store.outbox import Outbox
from store.records import Requests, Submission
from store.sweep import Sweeper
from tests.support.api import SENT_THEN_EXPIRED_S, submit, wait_status
from tests.support.signed_callbacks import signed_headers


def timeline(api, rid: str) -> dict:
    answer = api.get(f"/v1/requests/{rid}/events")
    assert answer.status_code == 200, answer.text
    return answer.json()


def names(events: list[dict]) -> list[str]:
    return [e["event"] if e["event"] != "callback" else f"callback:{e['verdict']}" for e in events]


def post_callback(api, web, rid: str | None, api_id: str, signed: bool = True, status: str = "completed"):
    path = "/callbacks/plivo" + (f"?rid={rid}" if rid else "")
    body = {"api_id": api_id, "status": status}
    headers = signed_headers("POST", web.url + path, body) if signed else {"X-Plivo-Signature-V3": "forged"}
    return api.post(path, content=json.dumps(body), headers={"Content-Type": "application/json", **headers})


def test_the_happy_path_is_read_from_the_record_and_writes_no_event(api, redis, worker):
    record = api.post(
        "/v1/requests",
        json={"method": "POST", "path": "Call/", "params": {"to": "14155550101"}},
        headers={"Idempotency-Key": "order-1234"},
    ).json()
    rid = record["request_id"]
    done = wait_status(api, rid, "completed")
    answer = timeline(api, rid)
    assert answer["request_id"] == rid and answer["dropped"] == 0
    events = answer["events"]
    assert names(events) == ["submitted", "sent", "api_id", "callback:matched", "completed"]
    submitted, sent, api_id, callback, completed = events
    assert submitted == {"at": done["submitted_at"], "event": "submitted", "idempotency_key": "order-1234"}
    assert sent["at"] == done["sent_at"] and sent["attempt"] == 1 and sent["outcome"] == "accepted"
    assert 0 <= sent["latency_ms"] < 5000
    assert api_id["api_id"] == done["api_id"]
    assert callback["method"] == "POST" and callback["signature"] == "valid"
    assert callback["size"] == len(json.dumps(done["response"], separators=(",", ":"), sort_keys=True))
    assert completed == {"at": done["completed_at"], "event": "completed"}
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    assert not redis.exists(keys.events(rid))  # nothing more kept than before


def test_failed_send_attempts_and_a_duplicate_callback_are_listed(api, sandbox, worker):
    sandbox.faults(status_5xx={"rate": 1.0, "times": 2, "status": 503}, duplicate_callback={"rate": 1.0})
    rid = submit(api)["request_id"]
    wait_status(api, rid, "completed")
    wait_for(lambda: "callback:duplicate" in names(timeline(api, rid)["events"]), 15, 0.05, "the duplicate")
    events = timeline(api, rid)["events"]
    assert names(events)[:5] == ["submitted", "sent", "sent", "sent", "api_id"]
    # the sandbox's two deliveries may reach web at once: either may be the one matched first
    assert sorted(names(events)[5:]) == ["callback:duplicate", "callback:matched", "completed"]
    first, second, third = events[1:4]
    assert [(s["attempt"], s["outcome"]) for s in (first, second, third)] == [
        (1, "retry"),
        (2, "retry"),
        (3, "accepted"),
    ]
    assert first["upstream_status"] == 503 and "error" not in first and first["latency_ms"] >= 0
    [duplicate] = [e for e in events if e.get("verdict") == "duplicate"]
    assert duplicate["signature"] == "valid" and duplicate["method"] == "POST"


def test_a_late_a_repeated_and_a_refused_callback_after_expiry(api, sandbox, web, worker):
    sandbox.faults(drop_callback=1.0)
    rid = submit(api, callback_timeout=SENT_THEN_EXPIRED_S)["request_id"]
    expired = wait_status(api, rid, "expired", timeout=SENT_THEN_EXPIRED_S + 15)
    assert post_callback(api, web, rid, expired["api_id"]).json() == {"outcome": "late"}
    assert post_callback(api, web, rid, expired["api_id"]).json() == {"outcome": "duplicate"}
    assert post_callback(api, web, rid, expired["api_id"], signed=False).status_code == 403
    events = timeline(api, rid)["events"]
    assert names(events) == [
        "submitted",
        "sent",
        "api_id",
        "expired",
        "callback:late",
        "completed",
        "callback:duplicate",
        "callback:refused",
    ]
    assert events[3] == {"at": expired["completed_at"], "event": "expired", "reason": expired["error"]["reason"]}
    refused = events[-1]
    assert refused["signature"] == "invalid" and refused["reason"] == "signature" and refused["size"] > 0


def test_the_list_keeps_the_newest_and_counts_the_dropped(api, web, worker, sandbox):
    sandbox.faults(drop_callback=1.0)
    rid = submit(api)["request_id"]
    wait_status(api, rid, "pending")
    for _ in range(53):
        assert post_callback(api, web, rid, str(uuid.uuid4()), signed=False).status_code == 403
    answer = timeline(api, rid)
    assert answer["dropped"] == 3
    assert names(answer["events"]) == ["submitted", "sent", "api_id", *["callback:refused"] * 50]


def test_only_the_tenants_own_requests_have_a_timeline(api, api_b, worker):
    rid = submit(api)["request_id"]
    assert api.get(f"/v1/requests/{rid}/events").status_code == 200
    for client, path in ((api_b, rid), (api, str(uuid.uuid4())), (api, "not-an-id")):
        answer = client.get(f"/v1/requests/{path}/events")
        assert answer.status_code == 404 and answer.json()["error"] == "no request with that id"
    assert api.get(f"/v1/requests/{rid}/events", headers={"Authorization": "Bearer wrong"}).status_code == 401


@pytest.fixture
def own_redis(redis_server):
    """A database of its own, empty: the session's worker sweeps database 0."""
    client = connect(f"redis://127.0.0.1:{redis_server.port}/15")
    client.flushdb()
    yield client
    client.close()


@pytest.mark.fast
def test_an_early_callback_is_listed_once_its_api_id_is_registered(own_redis):
    requests, outbox, deliveries = Requests(own_redis, 60), Outbox(own_redis, 60, 4), Deliveries(own_redis, 60, 60)
    rid = requests.submit(Submission("t1", "POST", "Call/", {}, "POST", 60)).record.fields["request_id"]
    [item] = outbox.claim("drainer-1", {"api": 1, "calls": 1}, [], may_leave=False).items
    assert outbox.mark_sending(item) == 1
    api_id = str(uuid.uuid4())
    assert deliveries.store("", api_id, {"api_id": api_id}, "GET", nonce="v3:n1") == "early"
    assert outbox.register_api_id(rid, api_id, 60, item.claim_id) == "completed"
    record = requests.get(rid)
    assert record is not None
    listed = own_redis.lrange(keys.events(rid), 0, -1)
    events = build(record.fields, [], [], listed, "valid").events
    # it named the api_id, and completed the request, before the worker registered that api_id
    assert names(events) == ["submitted", "sent", "api_id", "callback:early", "completed"]
    early = events[3]
    assert events[2]["at"] == early["at"] == events[4]["at"]
    assert early["method"] == "GET" and early["signature"] == "valid" and "d" not in early
    finished_at = int(record.fields["completed_at"])
    assert Sweeper(own_redis, result_ttl=60).sweep(now=finished_at + 60_000 + 10_000 + 1000).purged == 1
    assert not own_redis.exists(keys.events(rid))  # deleted with its record


@pytest.mark.fast
def test_a_synchronous_answer_a_retry_and_notification_attempts():
    fields = {
        "request_id": "r1",
        "status": "completed",
        "submitted_at": "1000.5",
        "sent_at": "2000",
        "attempts": "1",
        "completed_at": "2250",
        "timeout": "60",
        "retry_of": "r0",
        "retried_as": "r2",
    }
    notified = [
        json.dumps(
            {
                "attempt": 1,
                "at": "1970-01-01T00:00:03.000Z",
                "status": 500,
                "outcome": "retry",
                "error": "HTTP 500",
                "next_at": "1970-01-01T00:00:04.000Z",
            }
        ),
        json.dumps(
            {"attempt": 2, "at": "1970-01-01T00:00:04.000Z", "status": 200, "outcome": "delivered", "error": None}
        ),
    ]
    events = build(fields, [], notified, [], "unchecked", retried_at="5000").events
    assert events == [
        {"at": "1970-01-01T00:00:01.000Z", "event": "submitted", "retry_of": "r0"},
        {"at": "1970-01-01T00:00:02.000Z", "event": "sent", "attempt": 1, "latency_ms": 250, "outcome": "accepted"},
        {"at": "1970-01-01T00:00:02.250Z", "event": "completed"},
        {
            "at": "1970-01-01T00:00:03.000Z",
            "event": "notification",
            "attempt": 1,
            "outcome": "retry",
            "status_code": 500,
            "error": "HTTP 500",
            "next_at": "1970-01-01T00:00:04.000Z",
        },
        {
            "at": "1970-01-01T00:00:04.000Z",
            "event": "notification",
            "attempt": 2,
            "outcome": "delivered",
            "status_code": 200,
        },
        {"at": "1970-01-01T00:00:05.000Z", "event": "retried", "retried_as": "r2"},
    ]
