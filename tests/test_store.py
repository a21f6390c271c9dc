"""The atomic steps in store/, driven directly against the real Redis:
every interleaving of worker and callback ends in one defined record.

On a database of their own, flushed before each test: the session's worker sweeps database
0 every second (it takes the sweep lock and expires, recovers and rings requests there), so
a test there would race with it."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from local.processes import wait_for
from local.redis_server import RedisServer
from store import connect, keys
from store.connection import OUTAGE, now_ms
from store.deliveries import Deliveries
from store.outbox import Outbox
from store.records import Filter, Requests, Submission, new_id
from store.scripts import NotReplicated, source
from store.sweep import Sweeper

pytestmark = pytest.mark.fast

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


def claim_and_send(outbox, rid, drainer="drainer-1"):
    claim = outbox.claim(drainer, {"api": 10, "calls": 10}, [], may_leave=False)
    item = next(c for c in claim.items if c.rid == rid)
    assert outbox.mark_sending(item) == 1
    return item


NOT_SENT = {"reason": "not sent within callback_timeout", "attempts": 0}


def test_a_request_not_sent_within_its_callback_timeout_is_expired_by_the_sweep(stores, redis):
    requests, outbox, _ = stores
    rid = requests.submit(Submission("t1", "POST", "Call/", {"to": "1"}, "POST", 1)).record.fields["request_id"]
    sent = submit(requests)  # sent, and waiting for its callback: expired when that is late
    claim_and_send(outbox, sent)
    outbox.register_api_id(sent, str(uuid.uuid4()), 1)
    assert Sweeper(redis, TTL).sweep(now_ms() + 500).expired == 0
    assert Sweeper(redis, TTL).sweep(now_ms() + 2000).expired == 2
    record = requests.get(rid).to_json()
    assert record["status"] == "expired" and record["error"] == NOT_SENT and record["sent_at"] is None
    assert requests.get(sent).to_json()["error"] == {"reason": "no callback within callback_timeout"}
    assert outbox.claim("drainer-1", {"api": 10, "calls": 10}, [], may_leave=False).items == []


def test_a_claim_taken_before_the_callback_timeout_sends_nothing_after_it(stores):
    """The last gate before a request leaves: the claim was in time, the send would not be."""
    requests, outbox, _ = stores
    rid = requests.submit(Submission("t1", "POST", "Call/", {"to": "1"}, "POST", 1)).record.fields["request_id"]
    [item] = outbox.claim("drainer-1", {"api": 10, "calls": 10}, [], may_leave=False).items
    submitted = now_ms()
    wait_for(lambda: now_ms() > submitted + 1100, 5, message="the request's callback_timeout to pass")
    assert outbox.mark_sending(item) == 0
    record = requests.get(rid).to_json()
    assert record["status"] == "expired" and record["error"] == NOT_SENT and record["attempts"] == 0


def test_new_ids_are_uuid7_as_uuid_writes_them_and_ordered_by_time():
    ids = []
    for _ in range(50):
        ids.append(new_id())
        time.sleep(0.002)
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


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


def test_a_match_answers_the_tenant_of_the_request_its_url_named(stores):
    """The webhook's latency goes into that tenant's figures without a lookup of its own."""
    requests, outbox, deliveries = stores
    rid = submit(requests, tenant="t7")
    claim_and_send(outbox, rid)
    api_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    assert deliveries.match(rid, api_id, {"api_id": api_id}, "POST") == ("matched", "t7")
    assert deliveries.match(rid, api_id, {"api_id": api_id}, "POST") == ("duplicate", "t7")
    assert deliveries.match("", api_id, {"api_id": api_id, "n": 2}, "POST") == ("matched", "")  # the URL named none
    assert deliveries.match(str(uuid.uuid4()), other, {"api_id": other}, "POST") == ("early", "")  # no such request


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
    requests, outbox, _ = stores
    rid = submit(requests)
    assert requests.page("t1", Filter(status="queued"), 0, 20)[0] == 1
    claim_and_send(outbox, rid)
    assert requests.page("t1", Filter(status="queued"), 0, 20)[0] == 0
    assert requests.page("t1", Filter(status="sending"), 0, 20)[0] == 1
    assert requests.page("t2", Filter(), 0, 20)[0] == 0


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
    items = {c.rid: c for c in outbox.claim("drainer-1", {"api": 10, "calls": 10}, [], may_leave=False).items}
    for rid in (first, purged):
        assert outbox.mark_sending(items[rid]) == 1
        api_id = str(uuid.uuid4())
        outbox.register_api_id(rid, api_id, 60)
        assert deliveries.store(rid, api_id, {"api_id": api_id}, "POST") == "matched"
    finished_at = int(requests.get(purged).fields["completed_at"])
    sweeper = Sweeper(redis, result_ttl=1)
    assert sweeper.sweep(now=finished_at + 999).purged == 0
    assert requests.get(purged) is not None
    later = sweeper.sweep(now=finished_at + 1000 + 10_000 + 1000)  # due, and its bucket wholly past
    assert later.purged == 2
    assert requests.get(purged) is None and requests.page("t9", Filter(), 0, 20) == (0, [])
    assert requests.page("t9", Filter(status="completed"), 0, 20) == (0, [])
    assert requests.rid_for_api_id(api_id) is None
    left = [k for k in redis.scan_iter("ab:*") if not k.startswith(keys.SERIES_PREFIX)]  # figures over time stay
    assert [k for k in left if k not in ("ab:metrics", "ab:purge:next", "ab:drainers")] == []


def test_requests_of_a_drain_job_that_stopped_beating_come_back_before_their_lease(stores, redis):
    requests, outbox, _ = stores
    claimed, sent, sent_get = submit(requests), submit(requests), submit(requests, method="GET")
    items = {c.rid: c for c in outbox.claim("dead-drainer", {"api": 10, "calls": 10}, [], may_leave=False).items}
    for rid in (sent, sent_get):
        assert outbox.mark_sending(items[rid]) == 1
    redis.zadd(keys.DRAINERS, {"dead-drainer": 0})  # its heartbeat stopped long ago; leases run 60 s
    assert Sweeper(redis, TTL).sweep().recovered == 3
    status = {rid: requests.get(rid).to_json() for rid in (claimed, sent, sent_get)}
    assert status[claimed]["status"] == "queued"
    assert status[claimed]["attempts"] == 0  # never marked sending: provably never sent, goes out again
    assert status[sent]["status"] == "pending"  # a POST that may have left is never sent twice
    assert status[sent_get]["status"] == "queued"
    # the job was only slow (a Redis outage) and claims them again: its old hold on them is void
    again = {c.rid: c for c in outbox.claim("dead-drainer", {"api": 10, "calls": 10}, [], may_leave=False).items}
    assert set(again) == {claimed, sent_get}
    assert outbox.mark_sending(items[claimed]) == 0
    outbox.completed(items[sent_get], {"late": True})
    assert requests.get(sent_get).status == "queued"
    assert outbox.mark_sending(again[claimed]) == 1
    assert outbox.mark_sending(again[claimed]) == 1  # again, after an outage cut the answer off: no change
    assert requests.get(claimed).to_json()["attempts"] == 1


def test_a_beating_drain_job_keeps_its_requests(stores, redis):
    requests, outbox, _ = stores
    rid = submit(requests)
    claim_and_send(outbox, rid)
    assert Sweeper(redis, TTL).sweep().recovered == 0
    assert requests.get(rid).status == "sending"


def test_a_write_not_confirmed_by_enough_replicas_is_not_taken_as_kept(redis):
    deliveries = Deliveries(redis, TTL, TTL, min_replicas=1)  # the test Redis has no replica
    api_id = str(uuid.uuid4())
    with pytest.raises(NotReplicated) as raised:
        deliveries.store("", api_id, {"api_id": api_id}, "POST")
    assert raised.value.result == "early"  # written on the primary, yet not acknowledged


def test_a_delivery_is_stored_after_redis_forgot_the_scripts(redis):
    """The webhook runs its script without redis-py's command wrapper (Scripts.once): a Redis
    that lost its scripts (a restart, a failover) gets it loaded again, as redis-py would."""
    deliveries = Deliveries(redis, TTL, TTL)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert deliveries.store("", first, {"api_id": first}, "POST") == "early"
    redis.script_flush()
    assert deliveries.store("", second, {"api_id": second}, "POST") == "early"
    assert deliveries.store("", first, {"api_id": first}, "POST") == "duplicate"


def test_a_submission_is_stored_after_redis_forgot_the_scripts(redis):
    """Submissions run their script without redis-py's command wrapper too (Scripts.retried)."""
    requests = Requests(redis, TTL)
    submit(requests)
    redis.script_flush()
    rid = submit(requests)
    assert requests.get(rid).status == "queued"


def test_a_script_call_cut_off_by_a_timeout_leaves_no_answer_for_the_next_call(workdir):
    """A call that times out raises an outage (the webhook holds on and tries again) and closes
    its connection, so that its late answer is never read as the next call's. On a Redis of its
    own: it is stopped (SIGSTOP) for a moment."""
    server = RedisServer(workdir / f"redis-once-{uuid.uuid4().hex[:6]}").start()
    client = connect(server.url, socket_timeout=0.5, retries=0, max_connections=1)  # one connection, reused
    try:
        deliveries = Deliveries(client, TTL, TTL)
        kept, cut_off = str(uuid.uuid4()), str(uuid.uuid4())
        assert deliveries.store("", kept, {"api_id": kept}, "POST") == "early"
        server.pause()
        try:
            with pytest.raises(OUTAGE):
                deliveries.store("", cut_off, {"api_id": cut_off}, "POST")
        finally:
            server.resume()
        assert deliveries.store("", kept, {"api_id": kept}, "POST") == "duplicate"  # not the late "early"
        assert deliveries.store("", cut_off, {"api_id": cut_off}, "POST") in ("early", "duplicate")
    finally:
        client.close()
        server.stop()


@pytest.mark.parametrize("idempotency_key", [None, "key-1"])
def test_a_submission_retried_after_its_answer_was_lost_is_stored_once(workdir, idempotency_key):
    """A submission's script is sent again (as redis-py's Retry says: Scripts.retried) when its
    answer does not come in time, and Redis may then run the submit script twice: the second
    run must neither write the record afresh nor put the request in the outbox a second time
    (a second send, had a worker taken the first), and with an Idempotency-Key the first
    submission must not be answered as a replay of itself.
    On a Redis of its own, stopped (SIGSTOP) until the second attempt is on its way."""
    server = RedisServer(workdir / f"redis-resubmit-{uuid.uuid4().hex[:6]}").start()
    client = connect(server.url, socket_timeout=0.3, retries=2)
    me = psutil.Process()

    def connections() -> set[int]:
        return {
            c.laddr.port
            for c in me.net_connections("tcp")
            if c.raddr and c.raddr.port == server.port and c.status == psutil.CONN_ESTABLISHED
        }

    def scripts_run() -> int:
        return client.info("commandstats")["cmdstat_evalsha"]["calls"]

    try:
        requests = Requests(client, TTL)
        earlier = submit(requests)  # the script is loaded: the attempts below run it at once
        client.delete(keys.DRAINERS)  # no drain job alive: the submission registers one to start
        first, runs = connections(), scripts_run()
        server.pause()
        try:
            with ThreadPoolExecutor(1) as pool:
                submitting = pool.submit(
                    requests.submit,
                    Submission("t1", "POST", "Call/", {"to": "1"}, "POST", 60, idempotency_key=idempotency_key),
                )
                wait_for(lambda: connections() - first, 10, message="redis-py's second attempt")
                server.resume()
                submitted = submitting.result(timeout=30)
        finally:
            server.resume()
        assert scripts_run() - runs >= 2  # the script did run again
        rid = submitted.record.fields["request_id"]
        assert submitted.created and not submitted.conflict
        # the drain job the first run registered is still answered, so that it gets started
        assert submitted.ring_id and client.zscore(keys.DRAINERS, submitted.ring_id) is not None
        outbox = [r for key in client.scan_iter(keys.PREFIX + "outbox:*") for r in client.lrange(key, 0, -1)]
        assert outbox == [earlier, rid]
        assert client.hget(keys.PREFIX + "metrics", "submitted") == "2"
        assert requests.get(rid).status == "queued"
    finally:
        client.close()
        server.stop()


def test_a_send_threads_scripts_run_on_its_own_connection_and_survive_a_flush(workdir):
    """A worker's send thread holds a Redis connection of its own; its outbox's scripts (Scripts
    `direct`) run on that connection, not on one of the pool's, and a Redis that lost its scripts
    gets them loaded again. (That they skip redis-py's command wrapper is CPU, which no test
    measures: bench/throughput.py shows it.) On a Redis of its own, so that CLIENT LIST shows
    only this test's clients."""
    from redis import Redis

    server = RedisServer(workdir / f"redis-direct-{uuid.uuid4().hex[:6]}").start()
    client = connect(server.url)
    try:
        rid = submit(Requests(client, TTL))
        claim = Outbox(client, TTL, 4).claim("drainer-1", {"api": 10, "calls": 10}, [], may_leave=False)
        thread = Redis(connection_pool=client.connection_pool, single_connection_client=True)
        thread.client_setname("send-thread")
        outbox = Outbox(thread, TTL, 4, direct=True)

        def last_command() -> str:
            return next(c["cmd"] for c in client.client_list() if c["name"] == "send-thread")

        assert outbox.mark_sending(claim.items[0]) == 1 and last_command() == "evalsha"
        client.script_flush()
        assert outbox.register_api_id(rid, "api-1", 60) and last_command() == "evalsha"
        assert Requests(client, TTL).get(rid).fields["api_id"] == "api-1"
    finally:
        client.close()
        server.stop()


def test_a_sweep_drops_a_dead_drain_job_even_with_nothing_to_send(stores, redis):
    """A drain job rung but never run (its enqueue lost, its worker gone) must not be counted
    as a drainer for ever: the drainers gauge would say a worker is draining."""
    requests, outbox, _ = stores
    rid = submit(requests)  # rings a drain job: one drainer registered
    assert redis.zcard(keys.DRAINERS) == 1
    claim_and_send(outbox, rid)  # the outbox is empty now; nobody heart-beats the rung job
    sweeper = Sweeper(redis, TTL, drainer_stale_ms=1000)
    sweeper.sweep(now_ms() + 5000)
    assert redis.zcard(keys.DRAINERS) == 0


def test_a_script_carries_only_the_prelude_it_uses() -> None:
    """Redis runs a script's whole text on every call, its prelude's declarations too: each
    script carries those it uses, directly or through another one, and no others."""
    assert "local function read_record" in source("read")
    assert "local function read_record" not in source("match_callback")
    assert "local function unpack_record" in source("match_callback")  # through load()
    assert "local function rate_turn" not in source("submit")
