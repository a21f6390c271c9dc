"""Finding requests (GET /v1/requests's filters and `q`) and retrying them, one or in bulk.

One web of its own on a database of its own, without a worker: requests stay queued until the
test expires them (the store's sweep, run here as of a later time), so that which requests are
failed or expired, and when, is the test's choice. The bulk retry's test starts workers on it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import httpx
import pytest

from local.processes import wait_for
from store import keys
from store.connection import now_ms
from store.outbox import Outbox
from store.records import Filter, Requests, Submission
from store.retries import Retries
from store.sweep import Sweeper
from tests.support.api import submit
from tests.support.services import KEY_A, KEY_B, Stack, clear

DB = 4
TTL = 3600


@pytest.fixture(scope="module")
def stack(base_env, workdir, redis_server) -> Iterator[Stack]:
    env = {**base_env, "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/{DB}", "SWEEP_INTERVAL": "1"}
    stack = Stack(env, workdir, DB)
    stack.redis.flushdb()
    stack.start_web()
    yield stack
    stack.stop()


@pytest.fixture
def a(stack) -> Iterator[httpx.Client]:
    clear(stack.redis)
    assert stack.web is not None
    with stack.web.client(KEY_A) as client:
        yield client


@pytest.fixture
def b(stack) -> Iterator[httpx.Client]:
    assert stack.web is not None
    with stack.web.client(KEY_B) as client:
        yield client


def expire_due(stack: Stack) -> None:
    """Expire every request whose callback_timeout of 1 s has passed, as the sweep would then."""
    Sweeper(stack.redis, TTL).sweep(now_ms() + 2000)


def listed(client: httpx.Client, **params: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Every page of a filtered listing, by following meta.next, as ids (and each page's meta)."""
    answer = client.get("/v1/requests", params={"limit": 4, **params})
    assert answer.status_code == 200, answer.text
    rids, metas = [], []
    while True:
        page = answer.json()
        metas.append(page["meta"])
        rids += [r["request_id"] for r in page["objects"]]
        if not page["meta"]["next"]:
            return rids, metas
        answer = client.get(page["meta"]["next"])


def test_filters_page_each_match_once_with_an_exact_total(a, b, stack):
    made = []  # (rid, path, expires), oldest first
    for i in range(18):
        path, expires = ("Message/", "Call/")[i % 2], i % 3 == 0
        rid = submit(a, path=path, callback_timeout=1 if expires else 3600)["request_id"]
        made.append((rid, path, expires))
    submit(b, path="Message/")  # another tenant's: never listed
    expire_due(stack)

    def expect(**filt: Any) -> list[str]:
        rids, metas = listed(a, **filt)
        assert len(rids) == len(set(rids)), "a request listed twice across pages"
        assert metas[0]["total_count"] == len(rids)
        records = {r: a.get(f"/v1/requests/{r}").json() for r in rids}
        assert all(records[r]["submitted_at"] >= records[s]["submitted_at"] for r, s in pairwise(rids))
        return rids

    messages = [rid for rid, path, _ in made if path == "Message/"][::-1]
    assert expect(path="Message/") == messages
    assert expect(path="Message") == messages  # as a submission's path is stored
    expired_calls = [rid for rid, path, expires in made if path == "Call/" and expires][::-1]
    assert expect(path="Call/", status="expired") == expired_calls
    assert expect(status="queued") == [rid for rid, _, expires in made if not expires][::-1]
    times = [a.get(f"/v1/requests/{rid}").json()["submitted_at"] for rid, _, _ in made]
    window = [rid for rid, _, _ in made[4:11]][::-1]
    assert expect(since=times[4], until=times[10]) == window  # both bounds inclusive
    both = [rid for rid, path, _ in made[4:11] if path == "Message/"][::-1]
    assert expect(path="Message/", since=times[4], until=times[10]) == both
    _, metas = listed(a, status="queued", path="Call/", since=times[0])  # 6 of them: two pages
    assert all(f in metas[0]["next"] for f in ("status=queued", "path=Call", "since="))
    assert listed(b, path="Call/")[0] == []


def test_q_finds_a_request_by_id_api_id_or_idempotency_key_of_its_tenant_only(a, b, stack):
    keyed = a.post(
        "/v1/requests", json={"method": "POST", "path": "Call/", "params": {}}, headers={"Idempotency-Key": "order-7"}
    ).json()["request_id"]
    sent = submit(a, path="Message/")["request_id"]
    api_id = "63f0761a-e0ed-11e1-8ea7-12313924e3a6"
    Outbox(stack.redis, TTL, 1).register_api_id(sent, api_id, 60)  # the upstream accepted it
    for q, rid in ((keyed, keyed), (sent.upper(), sent), (api_id, sent), ("order-7", keyed)):
        page = a.get("/v1/requests", params={"q": q}).json()
        assert [r["request_id"] for r in page["objects"]] == [rid] and page["meta"]["total_count"] == 1, q
    assert a.get("/v1/requests", params={"q": api_id, "path": "Call/"}).json()["meta"]["total_count"] == 0
    assert a.get("/v1/requests", params={"q": "order-8"}).json()["objects"] == []
    for q in (keyed, api_id, "order-7"):
        assert b.get("/v1/requests", params={"q": q}).json()["meta"]["total_count"] == 0


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01T00:00:00Z"}, "until"),
        ({"status": "lost"}, "status"),
        ({"path": "../Call/"}, "path"),
        ({"path": "x" * 600}, "path"),
        ({"q": ""}, "q"),
    ],
)
def test_bad_filter_values_are_400_naming_the_parameter(a, query, parameter):
    answer = a.get("/v1/requests", params=query)
    assert answer.status_code == 400 and answer.headers["Content-Type"] == "application/json"
    assert answer.json()["parameter"] == parameter and parameter in answer.json()["error"]


def test_every_page_of_one_path_is_its_slice_of_the_merged_order(a, stack):
    """A path without a status merges that path's index of each status; a deep page finds its
    first entry by counts (how fast: `bench console`, "path filter, last page"). Its pages are
    those of the merged order, equal times by id, at any offset."""
    requests = Requests(stack.redis, TTL)
    for i in range(1500):
        requests.submit(Submission("deep", "POST", "Message/", {}, "POST", 1 if i % 2 else 3600))
    expire_due(stack)
    queued, expired = (keys.tenant_path_requests("deep", "Message/", s) for s in ("queued", "expired"))
    tie = stack.redis.zrange(queued, 350, 350, withscores=True)[0][1]
    stack.redis.zadd(expired, dict.fromkeys(stack.redis.zrange(expired, 340, 370), tie))  # at one time
    rows = [row for index in (queued, expired) for row in stack.redis.zrange(index, 0, -1, withscores=True)]
    order = [rid for rid, _ in sorted(rows, key=lambda row: (row[1], row[0]), reverse=True)]

    def page(offset: int) -> list[str]:
        total, records = requests.page("deep", Filter(path="Message/"), offset, 20)
        assert total == 1500
        return [r.fields["request_id"] for r in records]

    for offset in (0, 1, 729, 740, 751, 1480, 1499, 1500):
        assert page(offset) == order[offset : offset + 20], offset


def test_a_retry_makes_one_new_request_linked_both_ways_even_when_two_race(a, b, stack):
    old = submit(a, path="Message/", params={"text": "hi"}, callback_timeout=1)["request_id"]
    waiting = submit(a, path="Message/")["request_id"]
    expire_due(stack)
    assert b.post(f"/v1/requests/{old}/retry").status_code == 404  # another tenant's
    assert a.post(f"/v1/requests/{waiting}/retry").json() == {
        "error": "only a failed or expired request can be retried",
        "status": "queued",
    }
    answers: list[httpx.Response] = []
    start = threading.Barrier(2)

    def retry() -> None:
        assert stack.web is not None
        with stack.web.client(KEY_A) as client:
            start.wait()
            answers.append(client.post(f"/v1/requests/{old}/retry"))

    threads = [threading.Thread(target=retry) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [202, 409]
    created = next(answer for answer in answers if answer.status_code == 202).json()
    refused = next(answer for answer in answers if answer.status_code == 409).json()
    assert refused["retried_as"] == created["request_id"]
    assert created["retry_of"] == old and created["status"] == "queued" and created["path"] == "Message/"
    assert a.get(f"/v1/requests/{old}").json()["retried_as"] == created["request_id"]
    assert stack.redis.llen(keys.outbox(keys.API)) == 3  # the two submissions and one retry
    old_events = a.get(f"/v1/requests/{old}/events").json()["events"]
    retried = {"at": created["submitted_at"], "event": "retried", "retried_as": created["request_id"]}
    assert [e for e in old_events if e["event"] == "retried"] == [retried]  # expired "later": as of a later sweep
    new_events = a.get(f"/v1/requests/{created['request_id']}/events").json()["events"]
    assert new_events == [{"at": created["submitted_at"], "event": "submitted", "retry_of": old}]
    assert b.get(f"/v1/requests/{created['request_id']}/events").status_code == 404


@pytest.mark.parametrize(
    ("url", "body", "query"),
    [
        ("/v1/requests/retry", {"preview": "no"}, {}),
        ("/v1/requests/retry", {"preview": 0}, {}),
        ("/v1/requests/retry", {"preview": 1}, {}),
        ("/v1/requests/retry", {}, {"preview": "true"}),
        ("/v1/requests/{old}/retry", None, {"preview": "true"}),
    ],
)
def test_a_retry_refuses_what_it_could_misread_and_starts_nothing(a, stack, url, body, query):
    """A bulk retry's `preview` is a JSON boolean in its body: "no", 0 or a query parameter read
    as one way or the other would retry what the client meant to count."""
    old = submit(a, path="Message/", callback_timeout=1)["request_id"]
    expire_due(stack)
    answer = a.post(url.format(old=old), json=body, params=query)
    assert answer.status_code == 400 and answer.headers["Content-Type"] == "application/json", answer.text
    assert "preview" in answer.text
    assert list(stack.redis.scan_iter(keys.bulk_retry("*"))) == []
    assert a.get(f"/v1/requests/{old}").json()["retried_as"] is None


def test_a_bulk_retry_finishes_once_when_two_sweeps_list_it(a, stack):
    """The sweep's lock can lapse during a long pass: a second worker's sweep that listed the bulk
    retry before the first one finished it must leave its figures and finished_at as they were."""
    [submit(a, path="Message/", callback_timeout=1) for _ in range(2)]
    expire_due(stack)
    bulk = a.post("/v1/requests/retry", json={}).json()["bulk_id"]
    retries = Retries(stack.redis, TTL)
    retries.work(10)
    done = a.get(f"/v1/requests/retry/{bulk}").json()
    assert done["status"] == "done" and done["retried"] == 2
    stack.redis.zadd(keys.BULK_RETRIES, {bulk: 1})  # as the second sweep read it
    finished = int(stack.redis.hget(keys.bulk_retry(bulk), "finished_at"))
    wait_for(lambda: now_ms() > finished + 1, 2, 0.001, "a later millisecond")
    retries.work(10)
    assert a.get(f"/v1/requests/retry/{bulk}").json() == done
    assert stack.redis.zcard(keys.BULK_RETRIES) == 0


def test_a_bulk_retry_started_under_a_keys_former_id_is_still_its_own(a, b, stack):
    """A key named after it started a bulk retry (a rotation) reads it under its new tenant id."""
    bulk = Retries(stack.redis, TTL).start(keys.legacy_tenant(KEY_A), [])
    assert a.get(f"/v1/requests/retry/{bulk}").json()["status"] == "running"
    assert b.get(f"/v1/requests/retry/{bulk}").json() == {"error": "no bulk retry with that id"}


def test_a_bulk_retry_previews_counts_and_survives_a_restart_of_its_worker(a, b, stack):
    old = [submit(a, path="Message/", callback_timeout=1)["request_id"] for _ in range(6)]
    submit(a, path="Call/", callback_timeout=1)
    expire_due(stack)
    assert a.post("/v1/requests/retry", json={"path": "Message/", "preview": True}).json() == {"count": 6}
    assert a.post("/v1/requests/retry", json={"status": "queued"}).status_code == 400
    assert b.post("/v1/requests/retry", json={"preview": True}).json() == {"count": 0}
    started = a.post("/v1/requests/retry", json={"path": "Message/", "status": "expired"})
    assert started.status_code == 202 and started.json()["count"] == 6
    bulk = started.json()["bulk_id"]
    assert a.get(f"/v1/requests/retry/{bulk}").json()["status"] == "running"  # no worker yet
    assert b.get(f"/v1/requests/retry/{bulk}").status_code == 404

    def progress() -> dict[str, Any]:
        return a.get(f"/v1/requests/retry/{bulk}").json()

    first = stack.start_worker(BULK_RETRY_BATCH="2")
    wait_for(lambda: progress()["retried"] > 0, 20, 0.02, "the bulk retry's first step")
    first.kill()
    midway = progress()
    stack.start_worker(BULK_RETRY_BATCH="2")
    done = wait_for(lambda: (p := progress())["status"] == "done" and p, 20, 0.05, "the bulk retry to finish")
    assert done["retried"] == 6 and done["skipped"] == 0 and done["finished_at"] >= done["started_at"]
    kept = 604800  # RESULT_TTL's default, which this stack's web has
    assert not stack.redis.exists(keys.bulk_retry_rids(bulk)) and 0 < stack.redis.ttl(keys.bulk_retry(bulk)) <= kept
    assert midway["status"] == "running" and 0 < midway["retried"] < 6  # the first worker stopped midway
    retries = {a.get(f"/v1/requests/{rid}").json()["retried_as"] for rid in old}
    assert None not in retries and len(retries) == 6
    assert {a.get(f"/v1/requests/{rid}").json()["retry_of"] for rid in retries} == set(old)
    assert a.get("/v1/requests", params={"path": "Message/"}).json()["meta"]["total_count"] == 12
