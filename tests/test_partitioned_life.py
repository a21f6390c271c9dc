"""A request's life in a partitioned store (STORE_PARTITIONS=4, every partition on the test's one
Redis: the code path of a cluster but routing): submitted, claimed, sent, called back, expired,
found by api_id and waited for, each in its own partition; the upstream's rate limit held over
all of them; and a process refusing a store made with another count."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from functools import partial

import httpx

from config import EX_CONFIG
from local.processes import wait_for
from store import connect, keys
from store.deliveries import Deliveries
from store.drain_jobs import live_drainers
from store.outbox import Outbox
from store.partitions import Partitions
from store.rate_limits import Limit, RateLimiter
from store.records import Requests, Submission
from tests.support.api import SENT_THEN_EXPIRED_S, submit, wait_status, wait_worker
from tests.support.services import KEY_A, start_web
from tests.support.signed_callbacks import delivery
from workers.jobs import Rounds

DB = 15  # this module's own database (tests/README.md)
PARTS = Partitions(4)
TTL = 3600


def partitions_written(redis) -> dict[str, set[str]]:
    """The names (without prefix) of what each partition holds, by prefix."""
    found: dict[str, set[str]] = {}
    for name in redis.scan_iter(keys.PREFIX + "{*", count=1000):
        prefix = name[: name.index("}:") + 2]
        found.setdefault(prefix, set()).add(name[len(prefix) :].split(":")[0])
    return found


def test_a_partitioned_stack_runs_requests_to_their_end_in_every_partition(make_stack, sandbox):
    stack = make_stack(db=DB, STORE_PARTITIONS="4")
    # Message/ requests expire; a call is called back a second late, so that ?wait waits.
    delay = {"rate": 1.0, "paths": ["Call/"], "methods": ["POST"], "seconds": 1.0}
    sandbox.faults(drop_callback={"rate": 1.0, "paths": ["Message/"]}, callback_delay=delay)
    with stack.web.client(KEY_A) as api:
        wait_worker(api)
        posts = [submit(api)["request_id"] for _ in range(8)]
        gets = [submit(api, "GET", "Call/", {"limit": 5})["request_id"] for _ in range(4)]
        first = api.post("/v1/requests", json={"method": "POST", "path": "Call/", "params": {}}, headers=IDEM)
        again = api.post("/v1/requests", json={"method": "POST", "path": "Call/", "params": {}}, headers=IDEM)
        expire = {"method": "POST", "path": "Message/", "params": {}, "callback_timeout": SENT_THEN_EXPIRED_S}
        expiring = api.post("/v1/requests", json=expire, headers={"Idempotency-Key": key_in(3)}).json()["request_id"]
        call = {"method": "POST", "path": "Call/", "params": {}}
        waiting = api.post("/v1/requests", json=call, headers={"Idempotency-Key": key_in(2)}).json()["request_id"]
        asked = time.monotonic()
        waited = api.get(f"/v1/requests/{waiting}", params={"wait": 8}).json()
        woken_after = time.monotonic() - asked

        assert first.status_code == again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
        idem_rid = first.json()["request_id"]
        assert again.json()["request_id"] == idem_rid
        assert PARTS.of(idem_rid) == PARTS.home(_digest())
        # Woken by the finish, published on partition 2's channel, not by the end of the wait.
        assert waited["status"] == "completed" and woken_after < 6, woken_after
        done = [wait_status(api, rid, "completed") for rid in [*posts, *gets, idem_rid]]
        assert wait_status(api, expiring, "expired")["error"]["reason"] == "no callback within callback_timeout"
        assert {PARTS.of(rid) for rid in posts + gets} == {0, 1, 2, 3}
        assert PARTS.of(expiring) == 3  # swept in the last partition

        for record in done:  # found by api_id: its home pointer, then its partition's index
            found = api.get(f"/v1/results/{record['api_id']}")
            assert found.status_code == 200 and found.json()["request_id"] == record["request_id"]
        record = done[0]
        with httpx.Client(base_url=stack.web.url) as hooks:
            outcomes = [delivery(hooks, stack.web.url, record).json()["outcome"] for _ in range(2)]  # type: ignore[union-attr]
        assert outcomes == ["matched", "duplicate"]
        assert len(api.get(f"/v1/requests/{record['request_id']}/deliveries").json()["objects"]) == 2
        assert api.get(f"/v1/results/{uuid.uuid4()}").status_code == 404

    written = partitions_written(stack.redis)
    assert set(written) == set(PARTS.prefixes())
    assert all({"req", "tenant", "api", "purge", "metrics"} <= names for names in written.values()), written
    assert stack.redis.exists(keys.at(PARTS.at(idem_rid), keys.idempotency(_tenant(stack, idem_rid), _digest())))
    unpartitioned = ("req:*", "api:*", "idem:*", "outbox:*", "rl:*", "nonce:*", "drainers", "leases", "deadlines")
    assert not [k for pattern in unpartitioned for k in stack.redis.scan_iter(keys.PREFIX + pattern)]


IDEM = {"Idempotency-Key": "order-4711"}


def key_in(partition: int) -> str:
    """An Idempotency-Key whose requests live in `partition`."""
    return next(
        k for k in (f"key-{i}" for i in range(1000)) if PARTS.home(hashlib.sha256(k.encode()).hexdigest()) == partition
    )


def _digest(key: str = IDEM["Idempotency-Key"]) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _tenant(stack, rid: str) -> str:
    return Requests(stack.redis, TTL, partitions=PARTS).get(rid).tenant  # type: ignore[union-attr]


def _store(redis):
    requests = Requests(redis, TTL, partitions=PARTS)
    outbox = Outbox(redis, TTL, max_drainers=4, partitions=PARTS)
    deliveries = Deliveries(redis, TTL, 3600, partitions=PARTS)
    return requests, outbox, deliveries


def _sending(requests: Requests, outbox: Outbox, n: int = 1) -> list:
    """n requests submitted, claimed and marked sending: as a worker holds them when the upstream answers."""
    for _ in range(n):
        requests.submit(Submission("t1", "POST", "Call/", {}, "POST", 60))
    claim = outbox.claim("drainer-1", {keys.API: 0, keys.CALLS: n}, [], may_leave=False)
    assert len(claim.items) == n
    for item in claim.items:
        assert outbox.mark_sending(item) == 1
    return claim.items


def test_early_callbacks_find_their_request_in_another_partition(redis_server):
    """Without a rid a callback is kept in its api_id's partition until the worker registers the
    api_id, which brings it into the request's; with a rid naming no request, the api_id's home
    pointer finds the request."""
    redis = connect(f"{redis_server.url}/{DB}")
    redis.flushdb()
    requests, outbox, deliveries = _store(redis)
    item, other = _sending(requests, outbox, 2)
    api_id = next(a for a in (str(uuid.uuid4()) for _ in range(100)) if PARTS.home(a) != PARTS.of(item.rid))
    body = {"api_id": api_id, "status": "completed"}

    assert deliveries.match("", api_id, body, "POST").outcome == "early"
    assert redis.exists(keys.at(PARTS.prefix(PARTS.home(api_id)), keys.orphan(api_id)))
    assert outbox.register_api_id(item.rid, api_id, 60, item.claim_id) == "completed"
    record = requests.get(item.rid)
    assert record is not None and json.loads(record.fields["response"]) == body
    assert requests.rid_for_api_id(api_id) == item.rid
    assert not redis.exists(keys.at(PARTS.prefix(PARTS.home(api_id)), keys.orphan(api_id)))
    assert deliveries.match("", api_id, body, "POST").outcome == "duplicate"  # by the home pointer

    late_api_id = str(uuid.uuid4())
    assert outbox.register_api_id(other.rid, late_api_id, 60, other.claim_id) == "pending"
    unknown = next(r for r in (PARTS.new_id() for _ in range(100)) if PARTS.of(r) != PARTS.of(other.rid))
    late = {"api_id": late_api_id, "status": "completed"}
    assert deliveries.match(unknown, late_api_id, late, "POST") == ("matched", "")
    assert requests.get(other.rid).status == "completed"  # type: ignore[union-attr]
    assert requests.rid_for_api_id(str(uuid.uuid4())) is None


def test_the_rate_limit_holds_over_requests_of_every_partition(redis_server):
    """One limiter, in its own partition: sends of requests in four partitions are spaced as one
    log spaces them (window / limit apart), not four logs each allowing the limit."""
    redis = connect(f"{redis_server.url}/{DB}")
    redis.flushdb()
    requests, outbox, _ = _store(redis)
    items = _sending_unmarked(requests, outbox, 8)
    assert len({PARTS.of(item.rid) for item in items}) > 1
    limiter = RateLimiter(redis, "acct", {keys.CALLS: Limit(4, 0.4)}, margin_s=0, partitions=PARTS)
    started = time.monotonic()
    for item in items:
        assert limiter.acquire(keys.CALLS, partial(outbox.mark_sending, item), PARTS.at(item.rid)) is not None
    # Eight turns 100 ms apart (400 ms / 4) by Redis's clock: at least 700 ms by any other.
    assert time.monotonic() - started >= 0.7
    assert all(requests.get(item.rid).status == "sending" for item in items)  # type: ignore[union-attr]
    logs = [name for name in redis.scan_iter(keys.PREFIX + "*rl:*") if not name.endswith(":last")]
    assert logs == [limiter.key(keys.CALLS)]  # one log, in the limiter's own partition


def test_submissions_in_every_partition_ring_one_drain_job(redis_server):
    """With no drain job alive, the first submission rings one, which counts as every partition's
    drainer from then on: the others ring none (MAX_DRAINERS holds over all partitions), and the
    drain job counts once."""
    redis = connect(f"{redis_server.url}/{DB}")
    redis.flushdb()
    requests, outbox, _ = _store(redis)
    rings = []
    for p in range(PARTS.count):
        sub = Submission("t1", "POST", "Call/", {}, "POST", 60, idempotency_key=key_in(p))
        rings.append(requests.submit(sub).ring_id)
    assert len([r for r in rings if r]) == 1
    assert live_drainers(redis, 10_000, partitions=PARTS) == 1
    claim = outbox.claim(rings[0], {keys.API: 0, keys.CALLS: 10}, [], may_leave=False)
    assert sorted(PARTS.of(item.rid) for item in claim.items) == [0, 1, 2, 3]


def _sending_unmarked(requests: Requests, outbox: Outbox, n: int) -> list:
    for _ in range(n):
        requests.submit(Submission("t1", "POST", "Call/", {}, "POST", 60))
    items = outbox.claim("drainer-1", {keys.API: 0, keys.CALLS: n}, [], may_leave=False).items
    assert len(items) == n
    return items


def test_a_process_refuses_a_store_made_with_another_partition_count(make_stack):
    stack = make_stack(db=DB, workers=0, STORE_PARTITIONS="4")
    wait_for(lambda: stack.redis.get(keys.PREFIX + "partitions") == "4", 10, message="the count recorded")
    worker = stack.start_worker(STORE_PARTITIONS="2")
    web = start_web(stack.env, stack.workdir, "web-partitions-2", STORE_PARTITIONS="2")
    try:
        assert worker.process is not None
        try:
            status = worker.process.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not refuse to start:\n{worker.log()[-2000:]}") from None
        assert status == EX_CONFIG
        assert "refusing to start: STORE_PARTITIONS is 2 but this store was made with 4" in worker.log()
        with web.client(None) as client:
            ready = client.get("/readyz")
        assert ready.status_code == 503 and "STORE_PARTITIONS is 2" in ready.json()["error"]
        wait_for(lambda: "not ready: STORE_PARTITIONS is 2" in web.service.log(), 10, message="the logged reason")
        with stack.web.client(None) as client:
            assert client.get("/readyz").status_code == 200
    finally:
        web.service.stop()


def test_an_idle_drain_job_polls_one_partition_at_a_time_between_full_rounds():
    """With sends in flight and nothing found, one claim per idle poll, in turn; a full round when
    its heartbeat is due, when nothing is in flight, and after a round that found work."""
    rounds = Rounds(4)
    assert sorted(rounds.next(full=False)) == [0, 1, 2, 3]  # a new drain job looks everywhere
    rounds.found(False)
    polled = [rounds.next(full=False) for _ in range(4)]
    assert all(len(p) == 1 for p in polled) and sorted(p[0] for p in polled) == [0, 1, 2, 3]
    assert sorted(rounds.next(full=True)) == [0, 1, 2, 3]
    rounds.found(True)
    assert sorted(rounds.next(full=False)) == [0, 1, 2, 3]
    assert Rounds(1).next(full=False) == [0]


def test_a_callback_without_a_rid_racing_its_api_ids_pointer_finds_its_request(redis_server, monkeypatch):
    """The webhook looks for the api_id's home pointer, finds none, and the worker writes it (the
    upstream's answer came meanwhile) before the webhook's script runs in the api_id's partition:
    there the pointer is what the script reads as the api_id's index, naming a request that lives
    elsewhere. The script sends the callback to that request's partition, not into a record it
    does not have (a script error: a 500, and Plivo never retries)."""
    redis = connect(f"{redis_server.url}/{DB}")
    redis.flushdb()
    requests, outbox, deliveries = _store(redis)
    (item,) = _sending(requests, outbox)
    api_id = next(a for a in (str(uuid.uuid4()) for _ in range(100)) if PARTS.home(a) != PARTS.of(item.rid))
    body = {"api_id": api_id, "status": "completed"}
    looked = deliveries._where

    def pointed_meanwhile(rid: str, api_id: str) -> tuple[str, str, str]:
        found = looked(rid, api_id)
        outbox._point(item.rid, api_id, 600)  # the worker, between the webhook's look and its script
        return found

    monkeypatch.setattr(deliveries, "_where", pointed_meanwhile)
    assert deliveries.match("", api_id, body, "POST", nonce="n-1").outcome == "early"
    assert outbox.register_api_id(item.rid, api_id, 60, item.claim_id) == "completed"
    record = requests.get(item.rid)
    assert record is not None and json.loads(record.fields["response"]) == body


def test_a_round_runs_the_claim_script_only_where_there_is_work(redis_server):
    """A round over 24 partitions with one request queued runs one claim script, not 24, and
    still heart-beats the drain job in every partition and renews every lease it holds; a
    leaving round (nothing in flight) still asks every partition's script."""
    parts = Partitions(24)
    redis = connect(f"{redis_server.url}/{DB}")
    redis.flushdb()
    requests = Requests(redis, TTL, partitions=parts)
    outbox = Outbox(redis, TTL, max_drainers=4, partitions=parts)
    held = requests.submit(Submission("t1", "POST", "Call/", {}, "POST", 60)).record.fields["request_id"]
    first = outbox.claim("drainer-1", {keys.API: 0, keys.CALLS: 5}, [], may_leave=False)
    assert [item.rid for item in first.items] == [held]
    rid = requests.submit(Submission("t1", "POST", "Call/", {}, "POST", 60)).record.fields["request_id"]

    def scripts_run() -> int:
        return int(redis.info("commandstats")["cmdstat_evalsha"]["calls"])

    before, leased = scripts_run(), redis.zscore(keys.at(parts.at(held), keys.LEASES), held)
    claim = outbox.claim("drainer-1", {keys.API: 0, keys.CALLS: 5}, [held], may_leave=False)
    assert [item.rid for item in claim.items] == [rid] and scripts_run() - before == 1
    assert all(redis.zscore(keys.at(prefix, keys.DRAINERS), "drainer-1") for prefix in parts.prefixes())
    assert redis.zscore(keys.at(parts.at(held), keys.LEASES), held) >= leased  # type: ignore[operator]

    before = scripts_run()
    assert outbox.claim("drainer-1", {keys.API: 0, keys.CALLS: 5}, [], may_leave=True).leave
    assert scripts_run() - before == 24
