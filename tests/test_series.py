"""Figures over time and summary counts (store/series.py, receiver/series.py): counted by the
scripts that already run, in the minute they happened, for the request's own tenant and for
all tenants; another tenant's figures are never shown; scope=all takes an admin key; the
storage stays within its bound."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime

import httpx
import pytest

from local.processes import wait_for
from store import keys, metrics, series
from store.records import Requests, Submission
from store.scripts import Scripts
from tests.support.api import submit, wait_status, wait_worker
from tests.support.services import KEY_A


def figures(client: httpx.Client, **params: str) -> dict:
    answer = client.get("/v1/series", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def minute_of(iso_text: str) -> int:
    return int(datetime.fromisoformat(iso_text).timestamp()) // 60


def step_of(answer: dict, at_iso: str) -> int:
    return (minute_of(at_iso) - minute_of(answer["start"])) * 60 // answer["step_s"]


def test_a_completed_request_counts_in_its_minute_for_its_tenant_only(web, worker, api, api_b, redis):
    wait_worker(api)
    rid = submit(api, "POST", "Message/", {"src": "14155550100", "dst": "14155550101", "text": "hi"})["request_id"]
    record = wait_status(api, rid, "completed")
    submitted, completed = record["submitted_at"], record["completed_at"]

    def with_webhook_latency() -> dict | None:  # web adds its latencies once a second
        answer = figures(api, window="hour")
        return answer if any(v is not None for v in answer["series"]["webhook_latency_p50_ms"]) else None

    answer = wait_for(with_webhook_latency, 10, 0.1, "the webhook's latency in the tenant's figures")
    lists = answer["series"]
    assert answer["window"] == "hour" and answer["scope"] == "tenant" and answer["step_s"] == 60
    assert {len(values) for values in lists.values()} == {60}
    assert lists["submitted"][step_of(answer, submitted)] == 1 and sum(lists["submitted"]) == 1
    assert lists["completed"][step_of(answer, completed)] == 1 and sum(lists["completed"]) == 1
    assert sum(lists["failed"]) == sum(lists["expired"]) == sum(lists["callbacks_refused"]) == 0
    at = step_of(answer, completed)
    p50, p99 = lists["time_to_result_p50_ms"][at], lists["time_to_result_p99_ms"][at]
    assert 1 <= p50 <= p99 < 20000  # sent to a sandbox calling back after 50 ms
    webhook = [v for v in lists["webhook_latency_p50_ms"] if v is not None]
    assert len(webhook) == 1 and 0 < webhook[0] < 5000
    assert lists["time_to_result_p50_ms"].count(None) == 59  # a step without observations: null

    other = figures(api_b, window="hour")["series"]  # another tenant: nothing of tenant A's
    assert not any(sum(v) for k, v in other.items() if k in series.COUNTS)
    assert all(set(v) == {None} for k, v in other.items() if k not in series.COUNTS)

    everyone = figures(api_b, window="hour", scope="all")
    assert everyone["scope"] == "all" and sum(everyone["series"]["completed"]) == 1
    for window, steps, step_s in (("day", 144, 600), ("week", 168, 3600)):
        coarse = figures(api, window=window)
        assert coarse["step_s"] == step_s and {len(v) for v in coarse["series"].values()} == {steps}
        assert coarse["series"]["submitted"][step_of(coarse, submitted)] == 1
        assert coarse["series"]["time_to_result_p50_ms"][step_of(coarse, completed)] == p50  # merged, not averaged

    assert api.get("/v1/summary").json() == {
        "scope": "tenant",
        "counts": {"queued": 0, "sending": 0, "pending": 0, "completed": 1, "failed": 0, "expired": 0},
    }
    assert api_b.get("/v1/summary").json()["counts"]["completed"] == 0
    total = api_b.get("/v1/summary", params={"scope": "all"}).json()
    assert total["scope"] == "all" and total["counts"]["completed"] == 1 and total["counts"]["submitted"] == 1
    assert total["counts"]["quarantined"] == 0


def test_scope_all_takes_an_admin_key_and_arguments_are_checked(web, api):
    for path in ("/v1/series", "/v1/summary"):
        refused = api.get(path, params={"scope": "all"})
        assert refused.status_code == 403 and "ADMIN_API_KEYS" in refused.json()["error"]
        with web.client(None) as anonymous:  # the key is checked before the parameters
            for params in ({}, {"scope": "everyone"}, {"window": "month", "tenant": "x"}):
                assert anonymous.get(path, params=params).status_code == 401, params
        bad = api.get(path, params={"scope": "everyone"})
        assert bad.status_code == 400 and "scope" in bad.json()["error"]
        assert api.get(path, params={"tenant": "x"}).status_code == 400
    bad = api.get("/v1/series", params={"window": "month"})
    assert bad.status_code == 400 and "window" in bad.json()["error"]


def test_refused_callbacks_count_for_the_tenant_their_rid_names(web, worker, api, api_b):
    wait_worker(api)
    rid = submit(api, "POST", "Message/", {"src": "1", "dst": "2", "text": "x"})["request_id"]
    with web.client(None) as plivo:
        for named in (rid, None):  # a forged callback naming tenant A's request, then one naming none
            path = "/callbacks/plivo" + (f"?rid={named}" if named else "")
            headers = {"X-Plivo-Signature-V3": "forged", "X-Plivo-Signature-V3-Nonce": "n"}
            answer = plivo.post(path, json={"api_id": str(uuid.uuid4())}, headers=headers)
            assert answer.status_code in (401, 403), answer.text
    assert sum(figures(api)["series"]["callbacks_refused"]) == 1
    assert sum(figures(api_b)["series"]["callbacks_refused"]) == 0
    assert sum(figures(api_b, scope="all")["series"]["callbacks_refused"]) == 2


def test_a_failed_notification_counts_for_its_tenant(web, api, api_b, redis):
    rid = submit(api, "GET", "Account/")["request_id"]
    now = int(time.time() * 1000)
    Scripts(redis)("notify_settle", rid, "1", "failed", now, 0, json.dumps({"attempt": 1}), "refused: 410", 10)
    Scripts(redis)("notify_settle", str(uuid.uuid4()), "1", "failed", now, 0, "{}", "gone", 10)  # no such request
    assert sum(figures(api)["series"]["notifications_failed"]) == 1
    assert sum(figures(api_b)["series"]["notifications_failed"]) == 0
    assert sum(figures(api_b, scope="all")["series"]["notifications_failed"]) == 2


def test_a_keys_figures_include_what_is_still_filed_under_an_id_it_had_before(web, api, api_b, redis):
    """After an upgrade or a key's rotation, a request filed under an id the key had before (its
    alias) is its tenant's, read by id and found by `q`, until web moves it (every
    TENANT_MOVE_INTERVAL): the key's figures and counts include it meanwhile, no other key's do."""
    alias = keys.legacy_tenant(KEY_A)  # its id before ids were salted
    sub = Submission(alias, "POST", "Message/", {"text": "hi"}, "POST", 60, idempotency_key="order-rotated")
    rid = Requests(redis, 600).submit(sub).record.fields["request_id"]
    assert api.get(f"/v1/requests/{rid}").status_code == 200  # the key's own
    for client, found in ((api, [rid]), (api_b, [])):
        for q in (rid, "order-rotated"):
            page = client.get("/v1/requests", params={"q": q}).json()["objects"]
            assert [r["request_id"] for r in page] == found
    assert api.get("/v1/summary").json()["counts"]["queued"] == 1
    assert sum(figures(api, window="week")["series"]["submitted"]) == 1
    assert api_b.get("/v1/summary").json()["counts"]["queued"] == 0
    assert sum(figures(api_b, window="week")["series"]["submitted"]) == 0


def test_webhook_latencies_flushed_by_tenant_or_by_request_count_for_its_tenant(redis):
    """web names the tenant match_callback answered (`t:` and its id), or a request id whose
    tenant the script looks up (a callback never matched), or neither."""
    submitted = Requests(redis, 60).submit(Submission("t-by-rid", "POST", "Call/", {"to": "1"}, "POST", 60))
    rid = submitted.record.fields["request_id"]
    minute = int(time.time()) // 60 - 2 * 1440  # no other test's web writes there
    block, name = minute // series.BLOCK_MINUTES, f"{minute % series.BLOCK_MINUTES}w{series.slot(3)}"
    Scripts(redis)(
        "series_observe", metrics.series_who("t-named"), minute, series.slot(3), 2, rid, minute, series.slot(3), 3
    )
    Scripts(redis)("series_observe", metrics.series_who(""), minute, series.slot(3), 4)
    assert redis.hget(keys.series(series.scope_of("t-named"), block), name) == "2"
    assert redis.hget(keys.series(series.scope_of("t-by-rid"), block), name) == "3"
    assert redis.hget(keys.series(series.ALL, block), name) == "9"


def test_storage_is_bounded_kept_seven_days_and_small(redis):
    """A busy minute's observations (a thousand webhook latencies over a spread of buckets, and
    the longest ones clamped into the last bucket) for 10 minutes: one hash per scope and block,
    a listpack of a few KiB, expiring 7 days and a block after it was first written."""
    scripts = Scripts(redis)
    three_days_ago = int(time.time()) // 60 - 3 * 1440  # no other test's web writes there
    minute = three_days_ago // series.BLOCK_MINUTES * series.BLOCK_MINUTES
    for m in range(series.BLOCK_MINUTES):
        args: list = []
        for ms, n in ((3, 400), (5, 300), (9, 200), (40, 90), (400, 9), (10**12, 1)):
            args += ["", minute + m, series.slot(ms), n]
        scripts("series_observe", *args)
    names = [keys.series(series.ALL, minute // series.BLOCK_MINUTES)]
    assert [name for name in redis.scan_iter(keys.SERIES_PREFIX + "*") if name.endswith(names[0][-8:])] == names
    fields = redis.hgetall(names[0])
    assert len(fields) == 6 * series.BLOCK_MINUTES
    assert f"9w{series.SLOTS - 1}" in fields  # the longest: the last bucket, not a new one
    assert redis.memory_usage(names[0]) < 1024
    assert series.TTL_S - 60 < redis.ttl(names[0]) <= series.TTL_S == 7 * 86400 + series.BLOCK_MINUTES * 60
    assert redis.object("encoding", names[0]) in ("listpack", "ziplist")  # Redis 7, Redis 6


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        ({}, 50, None),
        ({series.slot(10): 1}, 50, series.slot_value(series.slot(10))),
        ({1: 98, 20: 2}, 99, 1024 / 2**0.25),
    ],
)
def test_percentiles_from_log_buckets(buckets, q, expected):
    value = series.percentile(buckets, q)
    assert value == (None if expected is None else pytest.approx(expected, rel=0.01))
    if buckets == {series.slot(10): 1}:
        assert 10 / 1.2 < value < 10 * 1.2  # the middle of its bucket is within 19 % of it
