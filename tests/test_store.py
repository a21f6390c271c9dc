"""The atomic steps in store/, driven directly against the real Redis:
every interleaving of worker and callback ends in one defined record.

On a database of their own, flushed before each test: the session's worker sweeps database
0 every second (it takes the sweep lock and expires, recovers and rings requests there), so
a test there would race with it."""
from __future__ import annotations

import threading
import uuid

import pytest

from store import connect
from store.callbacks import Deliveries
from store.outbox import Outbox
from store.records import Requests, Submission
from store.sweep import Sweeper

TTL = 3600
DB = 15


@pytest.fixture
def redis(redis_server):
    """This module's database, empty (it shadows the session's client on database 0)."""
    client = connect(f"redis://127.0.0.1:{redis_server.port}/{DB}")
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def stores(redis):
    return Requests(redis, TTL), Outbox(redis, TTL, 4), Deliveries(redis, TTL, TTL)


def submit(requests, tenant="t1", method="POST"):
    return requests.submit(Submission(tenant, method, "Call/", {"to": "1"}, "POST", 60)).record.fields["request_id"]


def claim_and_send(outbox, rid):
    claim = outbox.claim("drainer-1", {"api": 10, "calls": 10}, [], may_leave=False)
    assert rid in [c.rid for c in claim.items]
    assert outbox.mark_sending(rid)


def test_callback_by_api_id_before_registration_is_kept_then_matched(stores):
    requests, outbox, deliveries = stores
    rid = submit(requests)
    claim_and_send(outbox, rid)
    api_id = str(uuid.uuid4())
    assert deliveries.store("", api_id, {"api_id": api_id, "status": "ok"}, "POST") == "early"
    assert requests.get(rid).status == "sending"
    assert outbox.register_api_id(rid, api_id, 60) == "completed"
    record = requests.get(rid).to_json()
    assert record["status"] == "completed" and record["response"] == {"api_id": api_id, "status": "ok"}
    assert record["api_id"] == api_id and record["deliveries"] == 1


def test_callback_by_rid_before_registration_completes_and_registration_keeps_it(stores):
    requests, outbox, deliveries = stores
    rid = submit(requests)
    claim_and_send(outbox, rid)
    api_id = str(uuid.uuid4())
    assert deliveries.store(rid, api_id, {"api_id": api_id}, "POST") == "matched"
    outbox.register_api_id(rid, api_id, 60)
    record = requests.get(rid).to_json()
    assert record["status"] == "completed" and record["deadline"] is None
    assert requests.rid_for_api_id(api_id) == rid


def test_duplicate_delivery_changes_nothing_and_a_different_one_is_kept(stores):
    requests, outbox, deliveries = stores
    rid = submit(requests)
    claim_and_send(outbox, rid)
    api_id = str(uuid.uuid4())
    outbox.register_api_id(rid, api_id, 60)
    first = {"api_id": api_id, "n": 1}
    assert deliveries.store("", api_id, first, "POST") == "matched"
    assert deliveries.store("", api_id, dict(first), "GET") == "duplicate"
    assert deliveries.store(rid, api_id, {"api_id": api_id, "n": 2}, "POST") == "matched"
    record = requests.get(rid).to_json()
    assert record["response"] == first and record["deliveries"] == 2
    assert [d["body"]["n"] for d in requests.deliveries(rid)] == [1, 2]


def test_late_callback_after_expiry_completes_with_late_flag(stores, redis):
    requests, outbox, deliveries = stores
    rid = submit(requests)
    claim_and_send(outbox, rid)
    api_id = str(uuid.uuid4())
    outbox.register_api_id(rid, api_id, 0)
    result = Sweeper(redis, TTL).sweep()
    assert result.expired == 1 and requests.get(rid).status == "expired"
    assert deliveries.store("", api_id, {"api_id": api_id}, "POST") == "late"
    record = requests.get(rid).to_json()
    assert record["status"] == "completed" and record["late"] is True


@pytest.mark.parametrize("run", range(20))
def test_racing_callback_and_registration_always_complete_once(stores, run):
    requests, outbox, deliveries = stores
    rid = submit(requests)
    claim_and_send(outbox, rid)
    api_id = str(uuid.uuid4())
    body = {"api_id": api_id, "run": run}
    barrier = threading.Barrier(3)
    outcomes = []

    def deliver():
        barrier.wait()
        outcomes.append(deliveries.store("", api_id, body, "POST"))

    def register():
        barrier.wait()
        outbox.register_api_id(rid, api_id, 60)

    threads = [threading.Thread(target=deliver), threading.Thread(target=deliver), threading.Thread(target=register)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    record = requests.get(rid).to_json()
    assert record["status"] == "completed" and record["response"] == body
    assert record["deliveries"] == 1
    assert sorted(outcomes) in (["duplicate", "early"], ["duplicate", "matched"])


def test_list_index_follows_status_changes(stores):
    requests, outbox, deliveries = stores
    rid = submit(requests)
    assert requests.page("t1", "queued", 0, 20)[0] == 1
    claim_and_send(outbox, rid)
    assert requests.page("t1", "queued", 0, 20)[0] == 0
    assert requests.page("t1", "sending", 0, 20)[0] == 1
    assert requests.page("t2", None, 0, 20)[0] == 0


def test_only_one_sweeper_holds_the_lock_at_a_time(redis):
    sweepers = [Sweeper(redis, TTL) for _ in range(8)]
    barrier = threading.Barrier(len(sweepers))
    won = []

    def contend(i, sweeper):
        barrier.wait()
        if sweeper.try_lock(f"holder-{i}", 5):
            won.append(i)

    threads = [threading.Thread(target=contend, args=(i, s)) for i, s in enumerate(sweepers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1


def test_a_finished_request_is_purged_with_its_indexes_after_its_keep_time(redis):
    requests, outbox, deliveries = Requests(redis, 1), Outbox(redis, 1, 4), Deliveries(redis, 1, 1)
    first, purged = submit(requests, tenant="t9"), submit(requests, tenant="t9")
    outbox.claim("drainer-1", {"api": 10, "calls": 10}, [], may_leave=False)
    for rid in (first, purged):
        assert outbox.mark_sending(rid)
        api_id = str(uuid.uuid4())
        outbox.register_api_id(rid, api_id, 60)
        assert deliveries.store(rid, api_id, {"api_id": api_id}, "POST") == "matched"
    finished_at = int(requests.get(purged).fields["completed_at"])
    sweeper = Sweeper(redis, result_ttl=1)
    assert sweeper.sweep(now=finished_at + 999).purged == 0
    assert requests.get(purged) is not None
    later = sweeper.sweep(now=finished_at + 1000 + 10_000 + 1000)   # due, and its bucket wholly past
    assert later.purged == 2
    assert requests.get(purged) is None and requests.page("t9", None, 0, 20) == (0, [])
    assert requests.page("t9", "completed", 0, 20) == (0, [])
    assert requests.rid_for_api_id(api_id) is None
    assert [k for k in redis.scan_iter("ab:*") if k not in ("ab:metrics", "ab:purge:next", "ab:drainers")] == []
