"""Reads over a store split into partitions (STORE_PARTITIONS=4, store/partitions.py): the
listing merges every partition's page (each request once, newest first, an exact total, a deep
page without reading offset entries of each), q search finds a request by id, api_id or
Idempotency-Key where each lives, and the figures (/metrics, /v1/summary, /v1/series) and a
request's timeline read every partition's part, on one Redis and on the session's Redis Cluster
(tests/support/cluster.py). The requests are written by the store's own scripts, each in its
partition (as web and workers write them)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from redis import Redis

from config import Settings
from local.processes import wait_for
from store import keys, listing, metrics, series
from store.connection import connect, connect_store, now_ms, redis_target
from store.events import Events
from store.partitions import Partitions
from store.records import STATUSES, Filter, Requests, Submission, _digest, new_id
from store.scripts import Scripts
from tests.support.services import KEY_A, KEY_B

DB = 2  # this helper's database (make_stack flushes it)
TTL = 3600
PATHS = ("Message/", "Call/", "Number/")
TIED = 3  # requests submitted at one instant: ties within and across partitions, across pages


@dataclass
class Written:
    rid: str
    at: float
    path: str
    status: str
    api_id: str = ""
    idempotency_key: str = ""


def write(redis: Redis, parts: Partitions, tenant: str, n: int) -> list[Written]:
    """`n` requests of `tenant` (an Idempotency-Key on every other one, in its digest's home
    partition; the others spread over every partition), TIED an instant over the last
    minutes; an api_id for every third (with its home pointer, as web writes it); every fourth
    expired by each partition's sweep."""
    requests, scripts = Requests(redis, TTL, partitions=parts), Scripts(redis)
    base, written, calls = now_ms() - 600_000, [], []
    for i in range(n):
        idem = f"order-{i}" if i % 2 == 0 else ""
        sub = Submission(
            tenant=tenant,
            method="POST",
            path=PATHS[i % len(PATHS)],
            params={"n": i},
            callback_method="POST",
            callback_timeout=1 if i % 4 == 1 else 86400,
            idempotency_key=idem or None,
        )
        _, _, body_digest, args = requests.submit_args(sub)
        rid = parts.new_id(parts.home(_digest(idem)) if idem else (i // TIED) % parts.count)
        at = f"{base + i // TIED}.000"
        idem_key = keys.at(parts.at(rid), keys.idempotency(tenant, _digest(idem))) if idem else ""
        args = (rid, *args[1:6], at, *args[7:8], idem_key, f"{rid} {body_digest}" if idem else "", *args[10:])
        calls.append((parts.at(rid), args))
        written.append(Written(rid, float(at), sub.path, "expired" if i % 4 == 1 else "queued", idempotency_key=idem))
    scripts.each("submit", calls)
    now = now_ms()
    for w in written[::3]:
        w.api_id = new_id()
        redis.set(keys.at(parts.prefix(parts.home(w.api_id)), keys.api_id(w.api_id)), w.rid, ex=TTL)
        scripts("register_api_id", w.rid, w.api_id, now, now + 86_400_000, TTL, "", at=parts.at(w.rid))
    sweeps = [(prefix, (now, n, TTL, new_id(), now)) for prefix in parts.prefixes()]
    scripts.each("sweep", sweeps)
    return written


def newest_first(written: list[Written], filt: Filter) -> list[str]:
    kept = [
        w
        for w in written
        if (filt.status is None or w.status == filt.status)
        and (filt.path is None or w.path == filt.path)
        and (filt.since is None or w.at >= filt.since)
        and (filt.until is None or w.at < filt.until + 1)
    ]
    return [w.rid for w in sorted(kept, key=lambda w: (w.at, w.rid), reverse=True)]


def partitions_written(redis: Redis) -> set[str]:
    return {name[: name.index("}") + 1] for name in redis.scan_iter("ab:{*", count=1000)}


@pytest.fixture
def store(redis_server):
    redis = connect(redis_server.url.removesuffix("/0") + f"/{DB}")
    redis.flushdb()
    yield redis
    redis.flushdb()
    redis.close()


def test_the_listing_merges_partitions_each_request_once_newest_first(store, monkeypatch):
    parts = Partitions(4)
    written = write(store, parts, "t1", 300)
    assert len(partitions_written(store)) == 4
    requests = Requests(store, TTL, partitions=parts)
    middle = written[150].at
    filters = [
        Filter(),
        Filter(status="expired"),
        Filter(path="Message/"),  # a path alone: its statuses' indexes merged, in every partition
        Filter(path="Call/", status="queued"),
        Filter(since=int(middle) - 20, until=int(middle) + 10),
        Filter(path="Number/", since=int(middle)),
    ]
    for filt, shallow in [(filt, shallow) for shallow in (listing.SHALLOW, 0) for filt in filters]:
        monkeypatch.setattr(listing, "SHALLOW", shallow)  # 0: every page but the first searched for
        expected, listed, offset = newest_first(written, filt), [], 0
        while offset < len(expected):
            total, page = requests.page("t1", filt, offset, 20)
            assert total == len(expected), filt
            listed += [r.fields["request_id"] for r in page]
            offset += 20
        assert listed == expected, filt
        assert requests.page("t1", filt, len(expected), 20) == (len(expected), [])

    # A deep page reads at most twice a page of entries of each partition (not offset of them),
    # then the page's records alone.
    calls: dict[str, list] = {"page_scan": [], "page": []}
    each = requests.scripts.each

    def recorded(name, args):
        calls[name].append(args)
        return each(name, args)

    requests.scripts.each = recorded  # type: ignore[method-assign]
    expected = newest_first(written, Filter())
    for offset in (280, 251, 101):
        total, page = requests.page("t1", Filter(), offset, 20)
        assert total == 300 and [r.fields["request_id"] for r in page] == expected[offset : offset + 20]
        assert all(args[5] < 2 * 20 for _, args in calls["page_scan"][-1])  # n: the entries it reads
        assert sum(args[6] for _, args in calls["page"][-1]) == 20  # the records read: the page's
    assert Requests(store, TTL).page("t1", Filter(), 0, 20) == (0, [])  # one partition's layout: none there
    store.script_flush()  # a Redis that forgot its scripts (a restart, a failover): each loads its own again
    requests.scripts.each = each  # type: ignore[method-assign]
    assert [r.fields["request_id"] for r in requests.page("t1", Filter(), 280, 20)[1]] == expected[280:]


def test_search_finds_a_request_by_id_api_id_or_idempotency_key_in_its_partition(store):
    parts = Partitions(4)
    written = write(store, parts, "t1", 40)
    requests = Requests(store, TTL, partitions=parts)
    with_api_id = [w for w in written if w.api_id]
    for w in (written[3], with_api_id[1], with_api_id[2]):
        for q in (w.rid, w.api_id, w.idempotency_key):
            if q:
                total, found = requests.find("t1", (), q, Filter(), 0, 20)
                assert (total, [r.fields["request_id"] for r in found]) == (1, [w.rid]), q
        assert requests.find("t2", (), w.rid, Filter(), 0, 20) == (0, [])  # another tenant's
    assert {parts.of(w.rid) for w in written if w.idempotency_key} != {0}
    # a pointer left by a write whose script then failed names a record without that api_id
    # A second api_id of one request (a callback naming another leg) finds it too.
    w = with_api_id[1]
    second = next(a for a in iter(new_id, "") if parts.home(a) != parts.of(w.rid))
    store.set(keys.at(parts.prefix(parts.home(second)), keys.api_id(second)), w.rid)
    Scripts(store)("register_api_id", w.rid, second, now_ms(), now_ms() + 60_000, TTL, "", at=parts.at(w.rid))
    assert [r.fields["request_id"] for r in requests.find("t1", (), second, Filter(), 0, 20)[1]] == [w.rid]
    # (checked by the index in the request's partition, or, where that is the pointer's own key,
    # by the record's api_id)
    for same in (False, True):
        stray = next(a for a in iter(new_id, "") if (parts.home(a) == parts.of(written[1].rid)) == same)
        store.set(keys.at(parts.prefix(parts.home(stray)), keys.api_id(stray)), written[1].rid)
        assert requests.find("t1", (), stray, Filter(), 0, 20) == (0, [])


def test_figures_listing_search_and_timeline_over_http_read_every_partition(make_stack):
    stack = make_stack(db=DB, workers=0, STORE_PARTITIONS="4")
    parts = Partitions(4)
    with stack.web.client(KEY_A) as api, stack.web.client(KEY_B) as admin:
        assert api.get("/v1/requests").json()["meta"]["total_count"] == 0  # the tenant salt made
        tenant = keys.salted_tenant(stack.redis.get(keys.TENANT_SALT), KEY_A)
        written = write(stack.redis, parts, tenant, 120)
        assert len(partitions_written(stack.redis)) == 4
        expected = newest_first(written, Filter())
        listed = []
        for offset in range(0, 120, 20):
            answer = api.get("/v1/requests", params={"offset": offset}).json()
            assert answer["meta"]["total_count"] == 120
            listed += [o["request_id"] for o in answer["objects"]]
        assert listed == expected
        deep = api.get("/v1/requests", params={"offset": 95, "path": "Call/"}).json()
        assert [o["request_id"] for o in deep["objects"]] == newest_first(written, Filter(path="Call/"))[95:]
        w = next(w for w in written if w.api_id and w.idempotency_key)
        for q in (w.rid, w.api_id, w.idempotency_key):
            assert [o["request_id"] for o in api.get("/v1/requests", params={"q": q}).json()["objects"]] == [w.rid]

        expired = sum(w.status == "expired" for w in written)
        assert api.get("/v1/summary").json()["counts"] == {
            "queued": 120 - expired,
            "sending": 0,
            "pending": 0,
            "completed": 0,
            "failed": 0,
            "expired": expired,
        }
        everyone = admin.get("/v1/summary", params={"scope": "all"}).json()["counts"]
        assert (
            everyone["submitted"] == 120 and everyone["expired"] == expired and everyone["outbox"] == 120
        )  # expired ones leave it when claimed
        lines = api.get("/metrics").text.splitlines()
        assert "answerback_requests_submitted_total 120.0" in lines
        assert f'answerback_requests_finished_total{{status="expired"}} {expired:.1f}' in lines
        assert "answerback_outbox 120.0" in lines
        assert f'answerback_request_duration_seconds_count{{status="expired"}} {expired:.1f}' in lines
        hour = api.get("/v1/series").json()["series"]
        assert sum(hour["submitted"]) == 120 and sum(hour["expired"]) == expired

        # The webhook's latency is counted under the tenant of the request its URL names,
        # looked up in that request's partition.
        assert api.post("/callbacks/plivo", params={"rid": w.rid}, data={"x": "1"}).status_code >= 400
        wait_for(
            lambda: any(v is not None for v in api.get("/v1/series").json()["series"]["webhook_latency_p50_ms"]),
            10,
            0.1,
            "the webhook's latency in the tenant's figures",
        )

        entry = "1 " + json.dumps(
            {"event": "sent", "attempt": 1, "error": "connection reset", "at": str(int(w.at) + 1)}
        )
        stack.redis.rpush(keys.at(parts.at(w.rid), keys.events(w.rid)), entry)
        events = api.get(f"/v1/requests/{w.rid}/events").json()["events"]
        assert [e["event"] for e in events][:2] == ["submitted", "sent"] and events[1]["error"] == "connection reset"
        requests = Requests(stack.redis, TTL, partitions=parts)
        record = requests.get(w.rid)
        assert record is not None
        assert Events(stack.redis, requests).timeline(record.fields, "valid").events[1]["event"] == "sent"


def test_counters_add_up_over_partitions_the_global_hash_once_and_maxima_keep_the_greatest(store):
    parts = Partitions(4)
    store.hset(keys.METRICS, mapping={"submitted": 1, "ratelimit_wait_max_ms": 3})  # written from Python
    for p, prefix in enumerate(parts.prefixes()):
        store.hset(keys.at(prefix, keys.METRICS), mapping={"submitted": 10, "ratelimit_wait_max_ms": 5 + p})
    counters, _, _ = metrics.snapshot(store, parts)
    assert counters["submitted"] == 41 and counters["ratelimit_wait_max_ms"] == 8
    counters, _, _ = metrics.snapshot(store)  # one partition: its hash is the global one
    assert counters["submitted"] == 1 and counters["ratelimit_wait_max_ms"] == 3


def test_every_reader_runs_on_a_cluster_with_no_cross_slot_command(redis_cluster):
    """The readers' pipelines (scripts by their partition's prefix, an MGET per partition, the
    figures' reads) as a Redis Cluster's client sends them, over 24 partitions on 3 primaries."""
    settings = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_CLUSTER_NODES": redis_cluster.seeds})
    client = connect_store(redis_target(settings))
    parts = Partitions(24)
    written = write(client, parts, "t1", 200)
    requests = Requests(client, TTL, partitions=parts)
    for filt, offset in ((Filter(), 0), (Filter(), 170), (Filter(path="Message/"), 40), (Filter(status="expired"), 30)):
        expected = newest_first(written, filt)
        total, page = requests.page("t1", filt, offset, 20)
        assert (total, [r.fields["request_id"] for r in page]) == (len(expected), expected[offset : offset + 20])
    w = next(w for w in written if w.api_id and w.idempotency_key)
    for q in (w.rid, w.api_id, w.idempotency_key):
        assert [r.fields["request_id"] for r in requests.find("t1", (), q, Filter(), 0, 20)[1]] == [w.rid]
    assert metrics.snapshot(client, parts)[0]["submitted"] == 200
    assert sum(series.read(client, ("t1", "t0"), "hour", now_ms(), parts)[1]["submitted"]) == 200
    assert sum(series.tenant_counts(client, ("t1",), STATUSES, parts).values()) == 200
    record = requests.get(w.rid)
    assert record is not None and Events(client, requests).timeline(record.fields, "valid").events
    assert len({redis_cluster.primary_of(prefix).port for prefix in parts.prefixes()}) == 3
    client.close()
