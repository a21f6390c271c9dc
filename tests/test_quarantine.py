"""The quarantine (store/quarantine.py, receiver/quarantine.py): a callback refused for a
reason our own settings may cause is kept, bounded, logged once, and applied when a web with
the right settings verifies it again; a forged one stays."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config import Settings
from local import stack as local_stack
from local.processes import wait_for
from local.redis_server import free_port
from receiver import callbacks, create_app
from store import keys
from store.quarantine import ENTRY_OVERHEAD, UNKNOWN_OVERHEAD, Quarantine
from store.records import Requests, Submission
from tests.support.api import submit, wait_status, wait_worker
from tests.support.services import AUTH_TOKEN, KEY_A, start_web
from tests.support.signed_callbacks import signed_headers

DB = 12
ADMIN = "admin-key-for-the-quarantine"
TOKEN = "quarantine-test-token"
PUBLIC = "https://hooks.example.com"
WRONG_URL = "https://answerback.example"  # a PUBLIC_URL that is not the one the worker hands out


def in_process_app(redis_url: str, **env: str):
    app = create_app(
        Settings.from_env(
            {
                "REDIS_URL": redis_url,
                "API_KEYS": KEY_A,
                "ADMIN_API_KEYS": ADMIN,
                "PLIVO_AUTH_TOKEN": TOKEN,
                "PUBLIC_URL": PUBLIC,
                **env,
            }
        )
    )
    for thread in threading.enumerate():  # the re-check at start: done before the test begins
        if thread.name == "quarantine-recheck":
            thread.join(10)
    callbacks._refusals_logged.clear()  # one log line per reason per process: a fresh count
    return app


@pytest.fixture
def app(redis_server):
    app = in_process_app(f"redis://127.0.0.1:{redis_server.port}/{DB}")
    redis = app.extensions["answerback"].redis
    redis.flushdb()
    yield app
    redis.flushdb()


def post_json(client, path: str, body: dict, signed_for: str, token: str = TOKEN):
    """A JSON callback signed for `signed_for` + `path`, through Flask's test client or httpx."""
    headers = {"Content-Type": "application/json", **signed_headers("POST", signed_for + path, body, token=token)}
    payload = {"content" if isinstance(client, httpx.Client) else "data": json.dumps(body)}
    return client.post(path, headers=headers, **payload), headers


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.fast
def test_refused_callbacks_are_answered_as_before_kept_and_logged_once_per_reason(app, caplog):
    client = app.test_client()
    rid = str(uuid.uuid4())
    sent = []
    with caplog.at_level(logging.WARNING, logger="receiver.callbacks"):
        for _ in range(3):  # signed with another token: 403
            answer, headers = post_json(
                client, f"/callbacks/plivo?rid={rid}", {"api_id": str(uuid.uuid4()), "x": "BODY-MARK"}, PUBLIC, "nope"
            )
            assert answer.status_code == 403 and answer.json == {"error": "callback signature is missing or invalid"}
            sent.append(headers["X-Plivo-Signature-V3"])
        answer, _ = post_json(client, "/callbacks/plivo", {"api_id": "not-a-uuid"}, PUBLIC)  # signed: its shape
        assert answer.status_code == 400 and "not a UUID" in answer.json["error"]
        answer = client.post("/callbacks/plivo", data=b"{oops", headers={"Content-Type": "application/json"})
        assert answer.status_code == 400
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 3, lines  # one per reason, however many came
    signature = next(line for line in lines if "(signature)" in line)
    assert f"rid={rid}" in signature and f"checked against {PUBLIC}/callbacks/plivo?rid={rid}" in signature
    assert "kept in the quarantine" in signature
    assert any("(api_id)" in line for line in lines) and any("(body)" in line for line in lines)
    for secret in (*sent, TOKEN, "BODY-MARK"):
        assert secret not in caplog.text

    listed = client.get("/v1/quarantine?limit=2", headers=bearer(ADMIN))
    assert listed.status_code == 200, listed.text
    assert listed.json["meta"]["total_count"] == 5 and len(listed.json["objects"]) == 2
    assert listed.json["meta"]["next"] == "/v1/quarantine?limit=2&offset=2"
    everything = client.get("/v1/quarantine", headers=bearer(ADMIN)).json["objects"]
    assert sorted(e["reason"] for e in everything) == ["api_id", "body", "signature", "signature", "signature"]
    forged = next(e for e in everything if e["reason"] == "signature")
    assert forged["rid"] == rid and forged["method"] == "POST" and forged["url"] == f"/callbacks/plivo?rid={rid}"
    assert forged["checked_url"] == PUBLIC + "/callbacks/plivo" and forged["size"] > 0 and forged["received_at"]
    assert forged["headers"]["Content-Type"] == "application/json"
    shown = json.dumps(everything)
    assert "signature-v3" not in shown.lower() and not any(s in shown for s in sent)
    redis = app.extensions["answerback"].redis
    assert redis.hget(keys.METRICS, "rejected_signature") == "3"


@pytest.mark.fast
@pytest.mark.parametrize("path, method", [("/v1/quarantine", "get"), ("/v1/quarantine/recheck", "post")])
def test_the_quarantine_endpoints_take_only_an_admin_key(app, path, method):
    client = app.test_client()
    call = getattr(client, method)
    for headers, status in (({}, 401), (bearer("unknown"), 401), (bearer(KEY_A), 403), (bearer(ADMIN), 200)):
        answer = call(path, headers=headers)
        assert answer.status_code == status and answer.is_json, (headers, answer.text)
        if status != 200:
            assert answer.json["error"]
    assert "admin" in call(path, headers=bearer(KEY_A)).json["error"]


@pytest.mark.fast
def test_the_bound_drops_the_oldest_and_counts_every_drop(redis):
    entry = {"reason": "signature", "rid": "", "method": "POST", "path": "/callbacks/plivo", "query": "", "headers": {}}
    body = b"x" * 1000
    probe = Quarantine(redis, 60, 10**9)
    probe.keep({**entry, "rid": "p"}, body)  # as long as each below
    one = int(redis.get(keys.QUARANTINE_BYTES))  # what one entry counts
    assert one > 1000 + ENTRY_OVERHEAD
    redis.delete(keys.QUARANTINE, keys.QUARANTINE_ENTRIES, keys.QUARANTINE_BYTES)

    quarantine = Quarantine(redis, 60, 4 * one)
    for n in range(10):
        assert quarantine.keep({**entry, "rid": str(n)}, body)
    total, kept = quarantine.page(0, 20)
    assert total == 4 and [e["rid"] for e in kept] == ["9", "8", "7", "6"]  # newest first
    assert redis.hget(keys.METRICS, "quarantine_dropped_full") == "6"
    assert int(redis.get(keys.QUARANTINE_BYTES)) == 4 * one
    assert not quarantine.keep(entry, b"y" * 5 * one)  # alone larger than the bound: not kept
    assert redis.hget(keys.METRICS, "quarantine_dropped_full") == "7"
    assert 0 < redis.pttl(keys.QUARANTINE) <= 60_000

    short = Quarantine(redis, 1, 4 * one)  # QUARANTINE_TTL of 1 s: what is older goes first
    wait_for(lambda: short.size() == 0, 5, 0.05, "the entries to age past the TTL")
    short.keep({**entry, "rid": "p"}, body)
    assert short.size() == 1 and redis.hget(keys.METRICS, "quarantine_dropped_expired") == "4"
    assert int(redis.get(keys.QUARANTINE_BYTES)) == one


@pytest.mark.fast
def test_past_the_bound_entries_naming_no_request_go_first_then_the_oldest_naming_one(redis):
    """Anyone can send a callback whose rid names no request; only Plivo is handed the rids
    of requests. The first kind go before any of the second whatever their age, and the second
    still push out their own oldest."""
    requests = Requests(redis, 60)
    known = [
        requests.submit(Submission("t1", "POST", "Call/", {"to": "1"}, "POST", 60)).record.fields["request_id"]
        for _ in range(4)
    ]
    unknown = [str(uuid.uuid4()) for _ in range(3)]  # as long as a request id: every entry counts the same
    entry = {"reason": "signature", "method": "POST", "path": "/callbacks/plivo", "query": "", "headers": {}}
    body = b"x" * 1000
    quarantine = Quarantine(redis, 60, 10**9)
    quarantine.keep({**entry, "rid": unknown[0]}, body)
    one = int(redis.get(keys.QUARANTINE_BYTES))
    quarantine.max_bytes = 3 * one

    def kept() -> list[str]:
        return [e["rid"] for e in reversed(quarantine.page(0, 20)[1])]  # oldest first

    def full() -> dict[str, str]:
        return {k: v for k, v in redis.hgetall(keys.METRICS).items() if k.startswith("quarantine_full_")}

    assert quarantine.keep({**entry, "rid": known[0]}, body) and quarantine.keep({**entry, "rid": known[1]}, body)
    assert quarantine.keep({**entry, "rid": unknown[1]}, body)  # pushes out the oldest naming none
    assert kept() == [known[0], known[1], unknown[1]]
    flags = [e["known_request"] for e in quarantine.page(0, 20)[1]]
    assert quarantine.keep({**entry, "rid": known[2]}, body)  # the newer one naming none goes first
    assert kept() == known[:3] and flags == [False, True, True]
    assert not quarantine.keep({**entry, "rid": unknown[2]}, body)  # no room beside those naming one
    assert quarantine.keep({**entry, "rid": known[3]}, body)  # they push out their own oldest
    assert kept() == known[1:]
    assert full() == {"quarantine_full_unknown": "3", "quarantine_full_known": "1"}
    assert redis.hget(keys.METRICS, "quarantine_dropped_full") == "4"
    assert int(redis.get(keys.QUARANTINE_BYTES)) == 3 * (one - UNKNOWN_OVERHEAD)  # they count less
    assert int(redis.get(keys.QUARANTINE_UNKNOWN_BYTES) or 0) == 0


@pytest.mark.fast
def test_a_refusal_while_redis_is_away_is_answered_at_once_and_said_so(caplog):
    app = in_process_app(f"redis://127.0.0.1:{free_port()}/0")
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="receiver.callbacks"):
        started = time.monotonic()
        answer, _ = post_json(client, "/callbacks/plivo", {"api_id": str(uuid.uuid4())}, PUBLIC, "nope")
        took = time.monotonic() - started
    assert answer.status_code == 403 and took < 1.0
    assert "not kept: Redis unavailable" in caplog.text


def metric(web_url: str, name: str) -> dict[str, float]:
    """A metric's samples by their label values ("" without labels)."""
    text = httpx.get(web_url + "/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return {
                ",".join(s.labels.values()) or "": s.value for s in family.samples if not s.name.endswith("_created")
            }
    return {}


def test_a_public_url_mismatch_quarantines_callbacks_until_a_web_with_the_right_url_applies_them(
    make_stack, workdir, sandbox
):
    """The worker hands the upstream callback URLs on its PUBLIC_URL, web checks signatures
    against another: every callback is refused. They are kept, counted and logged; web
    restarted with the right PUBLIC_URL applies them (late for a request that expired
    meanwhile), a second web misconfigured the same way quarantines more, which the admin
    endpoint applies; a forged one stays through every re-check."""
    env = {"ADMIN_API_KEYS": ADMIN, "WEB_CONCURRENCY": "1"}
    stack = make_stack(db=DB + 1, PUBLIC_URL=WRONG_URL, **env)
    wrong = stack.web
    right_url = wrong.url  # what the worker put into its callback URLs
    with wrong.client() as api, wrong.client(key=None) as anon:
        # A request not sent within its callback_timeout is never sent: the short one must be
        # sent before it expires, so the worker is up first, and 4 s leaves room on a busy machine.
        wait_worker(api)
        normal = submit(api)["request_id"]
        short = submit(api, callback_timeout=4)["request_id"]
        wait_for(lambda: metric(wrong.url, "answerback_quarantined") == {"": 2.0}, 15, 0.05, "two quarantined")
        normal_record = wait_status(api, normal, "pending")
        forged_body = {"api_id": normal_record["api_id"], "status": "forged"}
        answer, _ = post_json(anon, f"/callbacks/plivo?rid={normal}", forged_body, right_url, "not-the-token")
        assert answer.status_code == 403
        wait_status(api, short, "expired")
        listed = anon.get("/v1/quarantine", headers=bearer(ADMIN)).json()
        assert {e["rid"] for e in listed["objects"]} == {normal, short} and listed["meta"]["total_count"] == 3
        assert {e["reason"] for e in listed["objects"]} == {"signature"}
        recheck = anon.post("/v1/quarantine/recheck", headers=bearer(ADMIN)).json()
        assert recheck == {"checked": 3, "applied": 0, "outcomes": {}, "quarantined": 3}  # still the wrong URL
        assert anon.get("/dashboard/counts").status_code == 404  # no figure is public: an admin's
        assert anon.get("/v1/summary?scope=all", headers=bearer(ADMIN)).json()["counts"]["quarantined"] == 3
        codes = [p["code"] for p in api.get("/v1/status").json()["problems"]]
        assert "quarantined" in codes, codes
    log = wrong.service.log()
    refusals = [line for line in log.splitlines() if "callback refused (signature)" in line]
    assert len(refusals) == 1 and f"checked against {WRONG_URL}/callbacks/plivo?rid=" in refusals[0], refusals
    signatures = [json.loads(e.partition("\n")[0])["headers"] for e in stack.redis.hvals(keys.QUARANTINE_ENTRIES)]
    assert all(h["X-Plivo-Signature-V3"] not in log for h in signatures)

    port = int(wrong.url.rsplit(":", 1)[1])
    wrong.service.stop()
    restarted = local_stack.start_web(
        local_stack.web_env(stack.env, port, PUBLIC_URL=right_url, **env), workdir, f"web-db{DB + 1}-restarted"
    )
    stack.web.service = restarted  # the stack stops it
    with stack.web.client() as api:
        assert wait_status(api, normal, "completed")["response"].get("status") != "forged"
        late = wait_status(api, short, "completed")
        assert late["late"] is True
    assert metric(right_url, "answerback_quarantined") == {"": 1.0}  # the forged one
    assert metric(right_url, "answerback_quarantine_applied") == {"matched": 1.0, "late": 1.0}

    # A second web behind the same load balancer, still on the wrong PUBLIC_URL.
    sandbox.faults(drop_callback={"rate": 1.0})
    other = start_web(stack.env, workdir, f"web-db{DB + 1}-other", PUBLIC_URL=WRONG_URL, **env)
    try:
        with stack.web.client() as api, other.client(key=None) as anon:
            third = wait_status(api, submit(api)["request_id"], "pending")
            path = f"/callbacks/plivo?rid={third['request_id']}"
            answer, _ = post_json(anon, path, {"api_id": third["api_id"], "status": "ok"}, right_url, AUTH_TOKEN)
            assert answer.status_code == 403
            assert api.post("/v1/quarantine/recheck").status_code == 403  # an API key, not an admin one
            recheck = api.post("/v1/quarantine/recheck", headers=bearer(ADMIN)).json()
            assert recheck == {"checked": 2, "applied": 1, "outcomes": {"matched": 1}, "quarantined": 1}
            assert api.get(f"/v1/requests/{third['request_id']}").json()["status"] == "completed"
    finally:
        other.service.stop()


def test_a_flood_of_forged_callbacks_leaves_every_one_naming_a_request_to_be_applied(make_stack):
    """Genuine callbacks refused by a PUBLIC_URL mismatch, then a flood of forgeries naming no
    request, well past QUARANTINE_MAX_BYTES: the forgeries push out only each other, and a web
    with the right PUBLIC_URL applies every genuine one."""
    stack = make_stack(
        db=DB + 2, PUBLIC_URL=WRONG_URL, ADMIN_API_KEYS=ADMIN, WEB_CONCURRENCY="1", QUARANTINE_MAX_BYTES="16000"
    )
    right_url = stack.web.url
    with stack.web.client() as api, stack.web.client(key=None) as anon:
        wait_worker(api)
        rids = {submit(api)["request_id"] for _ in range(3)}
        wait_for(lambda: metric(right_url, "answerback_quarantined") == {"": 3.0}, 15, 0.05, "three quarantined")
        for _ in range(30):  # about 1.6 KB each: three times the bound
            forged = {"api_id": str(uuid.uuid4()), "status": "forged", "padding": "x" * 600}
            answer, _ = post_json(anon, f"/callbacks/plivo?rid={uuid.uuid4()}", forged, right_url, "not-the-token")
            assert answer.status_code == 403
        listed = anon.get("/v1/quarantine", headers=bearer(ADMIN)).json()["objects"]
        assert rids <= {e["rid"] for e in listed}
        assert {e["rid"] for e in listed if e["known_request"]} == rids
        assert len(listed) > 3 and not any(e["rid"] in rids for e in listed if not e["known_request"])
        dropped = metric(right_url, "answerback_quarantine_dropped_full")
        assert set(dropped) == {"unknown"} and dropped["unknown"] > 0
        assert metric(right_url, "answerback_quarantine_dropped") == {"full": dropped["unknown"]}

        right = create_app(Settings.from_env({**stack.env, "PUBLIC_URL": right_url}))  # re-checks at its start
        for thread in threading.enumerate():
            if thread.name == "quarantine-recheck":
                thread.join(10)
        rechecked = right.test_client().post("/v1/quarantine/recheck", headers=bearer(ADMIN)).json
        assert rechecked["applied"] == 0 and rechecked["quarantined"] == len(listed) - 3  # only forgeries left
        assert stack.redis.get(keys.QUARANTINE_BYTES) == stack.redis.get(keys.QUARANTINE_UNKNOWN_BYTES)
        for rid in rids:
            assert wait_status(api, rid, "completed")["response"].get("status") != "forged"
    assert metric(right_url, "answerback_quarantine_applied") == {"matched": 3.0}
