"""Notifications to the application, end to end: a real stack (web, worker, the
sandbox) notifies a real HTTP server in this test, which verifies every
notification with the `standardwebhooks` library."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from local.processes import wait_for
from tests.support.api import SENT_THEN_EXPIRED_S, submit, wait_status, written_keys
from tests.support.notify_receiver import NEW_SECRET, OLD_SECRET, Receiver
from tests.support.services import Stack, clear

SCHEDULE = "0.3,0.5,1,1,1,1"  # 7 attempts in about 5 s
DB = 6


@pytest.fixture(scope="module")
def stack(base_env, workdir, redis_server) -> Iterator[Stack]:
    """One stack for this module: notifications allowed to 127.0.0.1, signed with two
    secrets (a rotation under way), a short schedule and a 1 s timeout."""
    env = {
        **base_env,
        "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/{DB}",
        "SWEEP_INTERVAL": "1",
        "NOTIFY_HOSTS": "127.0.0.1,*.example.invalid",
        "WEBHOOK_SECRET": f"{NEW_SECRET},{OLD_SECRET}",
        "NOTIFY_SCHEDULE": SCHEDULE,
        "NOTIFY_TIMEOUT": "1",
    }
    built = Stack(env, workdir, DB)
    built.redis.flushdb()
    built.start_web()
    built.start_worker()
    yield built
    built.stop()


@pytest.fixture
def api(stack, sandbox) -> Iterator[Any]:
    clear(stack.redis, "*")
    with stack.web.client() as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def notified(api, rid: str, status: str = "delivered", timeout: float = 20) -> dict[str, Any]:
    def reached():
        record = api.get(f"/v1/requests/{rid}").json()
        assert "notify" in record, record
        return record if record["notify"]["status"] == status else None

    return wait_for(reached, timeout, 0.05, f"the notification of {rid} to be {status}")


def attempts(api, rid: str) -> list[dict[str, Any]]:
    return api.get(f"/v1/requests/{rid}/notifications").json()["objects"]


def test_completed_request_is_posted_signed_with_its_record(api, receiver):
    rid = submit(api, notify_url=receiver.url)["request_id"]
    record = notified(api, rid)
    [got] = receiver.events(rid)
    assert got["verified"] == [True]
    assert got["path"] == "/hook?token=t0ken"
    assert got["headers"]["Host"] == f"127.0.0.1:{receiver.port}"
    payload = got["payload"]
    assert payload["type"] == "request.completed" and payload["timestamp"] == record["completed_at"]
    assert {k: v for k, v in payload["data"].items() if k != "notify"} == {
        k: v for k, v in record.items() if k != "notify"
    }
    assert got["headers"]["webhook-id"] == record["notify"]["webhook_id"] == payload["data"]["notify"]["webhook_id"]
    assert record["notify"]["url"] == receiver.url and record["notify"]["attempts"] == 1
    assert record["notify"]["delivered_at"] and record["notify"]["last_error"] is None
    [attempt] = attempts(api, rid)
    assert attempt["status"] == 200 and attempt["outcome"] == "delivered" and attempt["attempt"] == 1
    assert attempt["webhook_id"] == got["headers"]["webhook-id"] and attempt["duration_ms"] >= 0


def test_failed_request_is_notified(api, receiver):
    rid = submit(api, "GET", "Call/00000000-0000-0000-0000-000000000000/", {}, notify_url=receiver.url)["request_id"]
    notified(api, rid)
    [got] = receiver.events(rid)
    assert got["payload"]["type"] == "request.failed" and got["payload"]["data"]["error"]["status"] == 404


def test_expired_request_is_notified(api, sandbox, receiver):
    sandbox.faults(drop_callback=1.0)
    rid = submit(api, callback_timeout=1, notify_url=receiver.url)["request_id"]
    notified(api, rid)
    [got] = receiver.events(rid)
    assert got["payload"]["type"] == "request.expired" and got["payload"]["data"]["status"] == "expired"


def test_late_callback_after_expiry_is_a_second_event(api, sandbox, receiver):
    sandbox.faults(callback_delay={"rate": 1.0, "seconds": SENT_THEN_EXPIRED_S + 3})
    rid = submit(api, callback_timeout=SENT_THEN_EXPIRED_S, notify_url=receiver.url)["request_id"]
    wait_for(lambda: len(receiver.events(rid)) == 2, 30, message="both events")
    expired, late = receiver.events(rid)
    assert expired["payload"]["type"] == "request.expired"
    assert late["payload"]["type"] == "request.completed" and late["payload"]["data"]["late"] is True
    assert expired["headers"]["webhook-id"] != late["headers"]["webhook-id"]
    assert notified(api, rid)["notify"]["webhook_id"] == late["headers"]["webhook-id"]


def test_two_errors_then_success_is_three_attempts_of_one_webhook_id(api, receiver):
    receiver.answers = [500, 500]
    rid = submit(api, notify_url=receiver.url)["request_id"]
    record = notified(api, rid)
    got = receiver.events(rid)
    assert len(got) == 3 and len({g["headers"]["webhook-id"] for g in got}) == 1
    assert all(g["verified"] == [True] for g in got)
    assert record["notify"]["attempts"] == 3 and record["notify"]["last_error"] == "HTTP 500"
    assert [(a["status"], a["outcome"]) for a in attempts(api, rid)] == [
        (500, "retry"),
        (500, "retry"),
        (200, "delivered"),
    ]


def test_a_failed_attempt_is_in_the_timeline_with_when_it_is_tried_again(api, receiver):
    receiver.answers = [500]
    rid = submit(api, notify_url=receiver.url)["request_id"]
    notified(api, rid)
    events = api.get(f"/v1/requests/{rid}/events").json()["events"]
    failed, delivered = [e for e in events if e["event"] == "notification"]
    assert (failed["attempt"], failed["status_code"], failed["outcome"]) == (1, 500, "retry")
    assert (delivered["attempt"], delivered["status_code"], delivered["outcome"]) == (2, 200, "delivered")
    assert failed["at"] < failed["next_at"] <= delivered["at"]  # ISO 8601 UTC strings sort in time order
    assert "next_at" not in delivered


def test_retry_after_is_honoured(api, receiver):
    receiver.answers = [(503, {"Retry-After": "2"})]
    rid = submit(api, notify_url=receiver.url)["request_id"]
    notified(api, rid)
    first, second = receiver.events(rid)
    assert second["time"] - first["time"] >= 1.9  # the schedule alone says 0.3 s


def test_redirects_are_not_followed(api, receiver):
    elsewhere = Receiver().start()
    try:
        receiver.answers = [(302, {"Location": elsewhere.url})]
        rid = submit(api, notify_url=receiver.url)["request_id"]
        notified(api, rid)
        assert [a["status"] for a in attempts(api, rid)] == [302, 200]
        assert elsewhere.received == []
    finally:
        elsewhere.stop()


def test_endpoint_down_for_a_while_then_up(api):
    receiver = Receiver()
    rid = submit(api, notify_url=receiver.url)["request_id"]
    wait_for(lambda: len(attempts(api, rid)) >= 2, 20, message="two failed attempts")
    receiver.start()
    try:
        record = notified(api, rid)
    finally:
        receiver.stop()
    tried = attempts(api, rid)
    assert [a["outcome"] for a in tried[:-1]] == ["retry"] * (len(tried) - 1)
    assert tried[0]["status"] is None and tried[0]["error"].startswith("could not reach the endpoint")
    assert record["notify"]["attempts"] == len(tried) and len(receiver.events(rid)) == 1


def test_receiver_that_never_answers_times_out_and_is_tried_again(api, receiver):
    receiver.answers = ["hang"]
    rid = submit(api, notify_url=receiver.url)["request_id"]
    notified(api, rid)
    first, second = attempts(api, rid)
    assert first["outcome"] == "retry" and "NOTIFY_TIMEOUT" in first["error"] and first["duration_ms"] >= 900
    assert second["outcome"] == "delivered"
    assert len({g["headers"]["webhook-id"] for g in receiver.events(rid)}) == 1


def test_endpoint_that_keeps_failing_ends_failed_after_the_schedule(api, receiver):
    receiver.answers = [500] * 20
    rid = submit(api, notify_url=receiver.url)["request_id"]
    record = notified(api, rid, "failed", timeout=30)
    assert record["notify"]["attempts"] == len(SCHEDULE.split(",")) + 1 == len(receiver.events(rid))
    assert attempts(api, rid)[-1]["outcome"] == "failed"
    metrics = api.get("/metrics").text
    assert 'answerback_notification_attempts_total{outcome="failed"} 1.0' in metrics
    assert 'answerback_notification_attempts_total{outcome="retry"} 6.0' in metrics
    assert "answerback_notifications_queued 0.0" in metrics


def test_every_secret_signs_so_a_receiver_can_rotate(api):
    receiver = Receiver(OLD_SECRET, NEW_SECRET, "whsec_" + base64.b64encode(b"someone-else").decode()).start()
    try:
        rid = submit(api, notify_url=receiver.url)["request_id"]
        notified(api, rid)
    finally:
        receiver.stop()
    [got] = receiver.events(rid)
    assert got["verified"] == [True, True, False]
    assert len(got["headers"]["webhook-signature"].split(" ")) == 2


def test_notify_sends_again_now_as_a_new_event(api, receiver):
    rid = submit(api, notify_url=receiver.url)["request_id"]
    first = notified(api, rid)
    answer = api.post(f"/v1/requests/{rid}/notify")
    assert answer.status_code == 202 and answer.json()["notify"]["status"] == "pending"
    wait_for(lambda: len(receiver.events(rid)) == 2, 10, message="the replay")
    again = notified(api, rid)
    assert again["notify"]["webhook_id"] != first["notify"]["webhook_id"]
    assert [a["webhook_id"] for a in attempts(api, rid)] == [
        first["notify"]["webhook_id"],
        again["notify"]["webhook_id"],
    ]


def test_notify_again_needs_a_finished_request_with_a_notify_url(api, sandbox, receiver):
    sandbox.faults(drop_callback=1.0)
    plain = wait_status(api, submit(api)["request_id"], "pending")
    assert api.post(f"/v1/requests/{plain['request_id']}/notify").status_code == 409
    pending = wait_status(api, submit(api, notify_url=receiver.url)["request_id"], "pending")
    answer = api.post(f"/v1/requests/{pending['request_id']}/notify")
    assert answer.status_code == 409 and "not finished" in answer.json()["error"]
    assert receiver.received == []


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.invalid/notify",
        "https://example.invalid/",
        "http://127.0.0.2/x",
        "ftp://127.0.0.1/x",
        "http://user:secret@127.0.0.1/x",
        "http://127.0.0.1:99999/x",
        "http:///x",
        "/relative",
    ],
)
def test_notify_url_outside_notify_hosts_is_422_and_writes_nothing(api, stack, url):
    answer = api.post("/v1/requests", json={"method": "POST", "path": "Call/", "notify_url": url})
    assert answer.status_code == 422, answer.text
    assert "notify_url" in answer.json()["fields"]
    assert written_keys(stack.redis) == []


def test_wildcard_host_is_allowed_at_submission(api):
    record = submit(api, "GET", "Call/", {}, notify_url="https://a.example.invalid:8443/n")
    assert record["notify"] == {
        "url": "https://a.example.invalid:8443/n",
        "status": "pending",
        "attempts": 0,
        "last_error": None,
        "delivered_at": None,
        "webhook_id": None,
    }


def test_notifications_are_off_without_notify_hosts(web, redis):
    with web.client() as api:
        answer = api.post(
            "/v1/requests", json={"method": "POST", "path": "Call/", "notify_url": "http://127.0.0.1:9/x"}
        )
    assert answer.status_code == 422 and "NOTIFY_HOSTS" in answer.json()["error"]
    assert written_keys(redis) == []


@pytest.mark.slow
def test_listed_name_resolving_to_an_unlisted_private_address_is_refused_at_send_time(make_stack, sandbox):
    """`localhost` is listed, but the address it resolves to (127.0.0.1) is neither public
    nor listed: the notification is refused and the endpoint never contacted."""
    receiver = Receiver().start()
    stack = make_stack(db=7, NOTIFY_HOSTS="localhost", WEBHOOK_SECRET=NEW_SECRET)
    try:
        with stack.web.client() as api:
            rid = submit(api, notify_url=f"http://localhost:{receiver.port}/hook")["request_id"]
            record = notified(api, rid, "failed")
            [attempt] = attempts(api, rid)
    finally:
        receiver.stop()
    assert attempt["outcome"] == "refused" and "public or listed" in attempt["error"]
    assert record["notify"]["attempts"] == 1 and receiver.received == []


@pytest.mark.slow
def test_worker_killed_while_notifications_are_due_loses_none(make_stack, sandbox):
    """Notifications in flight when the worker is SIGKILLed are sent again by another worker
    once their lease runs out, with the same webhook-id; those not yet claimed are sent too."""
    receiver = Receiver().start()
    receiver.answers = ["hang"] * 4
    stack = make_stack(
        db=8,
        NOTIFY_HOSTS="127.0.0.1",
        WEBHOOK_SECRET=NEW_SECRET,
        NOTIFY_TIMEOUT="2",
        NOTIFY_CONCURRENCY="4",
        NOTIFY_HOST_CONCURRENCY="4",
        NOTIFY_SCHEDULE="30",
    )
    try:
        with stack.web.client() as api:
            rids = [submit(api, notify_url=receiver.url)["request_id"] for _ in range(12)]
            wait_for(lambda: len(receiver.received) >= 4, 30, message="four notifications in flight")
            stack.workers[0].kill()
            receiver.release.set()
            stack.start_worker()
            records = [notified(api, rid, timeout=60) for rid in rids]
    finally:
        receiver.stop()
    for record in records:
        got = receiver.events(record["request_id"])
        assert got and all(g["verified"] == [True] for g in got)
        assert {g["headers"]["webhook-id"] for g in got} == {record["notify"]["webhook_id"]}
    assert len(receiver.received) <= len(rids) + 4


@pytest.mark.slow
def test_a_hanging_endpoint_holds_only_its_own_notifications(make_stack, sandbox):
    """An endpoint that never answers takes at most NOTIFY_HOST_CONCURRENCY of the notifier's
    threads: another host's notification still goes at once, and sending requests upstream
    and taking their callbacks go on as before."""
    stuck, fine = Receiver().start(), Receiver()
    stuck.answers = ["hang"] * 20
    stack = make_stack(
        db=9,
        NOTIFY_HOSTS="127.0.0.1",
        WEBHOOK_SECRET=NEW_SECRET,
        NOTIFY_TIMEOUT="30",
        NOTIFY_CONCURRENCY="4",
        NOTIFY_HOST_CONCURRENCY="2",
    )
    fine.start()
    try:
        with stack.web.client() as api:
            held = [submit(api, notify_url=stuck.url)["request_id"] for _ in range(6)]
            wait_for(lambda: len(stuck.received) == 2, 20, message="two notifications held by the stuck endpoint")
            plain = wait_status(api, submit(api)["request_id"], "completed")
            rid = submit(api, notify_url=fine.url)["request_id"]
            notified(api, rid, timeout=20)
            assert len(stuck.received) == 2
            assert all(api.get(f"/v1/requests/{r}").json()["notify"]["status"] == "pending" for r in held)
    finally:
        stuck.stop()
        fine.stop()
    assert plain["response"]["message"] == "call fired"


def test_a_tenant_with_a_secret_of_its_own_gets_no_other_tenants_validly_signed_notification(make_stack):
    """acme's endpoint checks acme's own secret: its notifications verify there, and one that
    tenant beta points at acme's endpoint (signed with WEBHOOK_SECRET) does not."""
    acme_secret = "whsec_" + base64.b64encode(b"acme's own notification secret").decode()
    stack = make_stack(
        db=DB + 1,
        API_KEYS="acme:acme-key,beta:beta-key",
        NOTIFY_HOSTS="127.0.0.1",
        WEBHOOK_SECRET=NEW_SECRET,
        TENANT_WEBHOOK_SECRETS=f"acme={acme_secret}",
        NOTIFY_SCHEDULE=SCHEDULE,
    )
    endpoint = Receiver(acme_secret, NEW_SECRET).start()  # checks acme's secret, and the default
    try:
        with stack.web.client("acme-key") as acme, stack.web.client("beta-key") as beta:
            ours = submit(acme, notify_url=endpoint.url)["request_id"]
            theirs = submit(beta, notify_url=endpoint.url)["request_id"]
            notified(acme, ours)
            notified(beta, theirs)
    finally:
        endpoint.stop()
    [mine] = endpoint.events(ours)
    [forged] = endpoint.events(theirs)
    assert mine["verified"] == [True, False]  # acme's secret alone
    assert forged["verified"] == [False, True]  # the default only: acme's endpoint refuses it
