"""Upgrading a single-Redis store to a partitioned one (store/migrate.py, `manage.py migrate`):
each finished request, with what hangs on it, lands in its partition, filed and findable; a source
with work in flight is refused; a repeated run copies nothing twice."""

from __future__ import annotations

import uuid

import pytest

from local.redis_server import RedisServer
from store import connect, keys
from store.deliveries import Deliveries
from store.migrate import NotDrained, migrate
from store.outbox import Outbox
from store.partitions import Partitions
from store.records import Requests, Submission
from store.scripts import Scripts

TTL = 3600
PARTS = Partitions(4)


@pytest.fixture
def servers(workdir):
    source = RedisServer(workdir / f"redis-migrate-from-{uuid.uuid4().hex[:6]}").start()
    target = RedisServer(workdir / f"redis-migrate-to-{uuid.uuid4().hex[:6]}").start()
    clients = [connect(s.url, decode_responses=d) for s in (source, target) for d in (True, False)]
    yield clients
    for client in clients:
        client.close()
    source.stop()
    target.stop()


def finished(requests: Requests, outbox: Outbox, deliveries: Deliveries, n: int, key: str = "") -> list[str]:
    """n requests of tenant t1 completed by a callback (the first with an Idempotency-Key)."""
    rids = []
    for i in range(n):
        sub = Submission(
            "t1", "POST", "Call/", {"to": str(i)}, "POST", 60, idempotency_key=(key or None) if i == 0 else None
        )
        rids.append(rid := requests.submit(sub).record.fields["request_id"])
        claim = outbox.claim("drainer-1", {"api": 10, "calls": 10}, [], may_leave=False)
        assert outbox.mark_sending(next(c for c in claim.items if c.rid == rid)) == 1
        api_id = str(uuid.uuid4())
        outbox.register_api_id(rid, api_id, 60)
        assert deliveries.store(rid, api_id, {"api_id": api_id, "n": i}, "POST") == "matched"
        if i == 1:  # a second, different delivery: a list hangs on the record
            assert deliveries.store(rid, api_id, {"api_id": api_id, "n": "again"}, "POST") == "matched"
    return rids


def test_finished_requests_land_in_their_partitions_filed_and_findable(servers):
    source, raw_source, target, raw_target = servers
    requests, outbox, deliveries = Requests(source, TTL), Outbox(source, TTL, 4), Deliveries(source, TTL, TTL)
    rids = finished(requests, outbox, deliveries, 12, key="order-1")
    source.hset(keys.METRICS, "custom", 7)

    copied = migrate(source, raw_source, target, raw_target, PARTS, TTL)

    assert (copied.requests, copied.already, copied.past_keep, copied.idempotency_keys) == (12, 0, 0, 1)
    assert target.get(keys.TENANT_SALT) == source.get(keys.TENANT_SALT) or source.get(keys.TENANT_SALT) is None
    read = Scripts(target)
    landed = set()
    for rid in rids:
        prefix = PARTS.at(rid)
        landed.add(prefix)
        before, after = Scripts(source)("read", rid), read("read", rid, at=prefix)
        assert after == before, "the record, its deliveries counted, as it was"
        assert target.zscore(keys.at(prefix, keys.tenant_requests("t1")), rid) is not None
        assert target.zscore(keys.at(prefix, keys.tenant_requests("t1", "completed")), rid) is not None
        api_id = dict(zip(after[::2], after[1::2]))["api_id"]
        home = keys.at(PARTS.prefix(PARTS.home(api_id)), keys.api_id(api_id))
        assert target.get(home) == rid and target.ttl(home) > 0
    assert len(landed) > 1, "the requests spread over partitions"
    assert target.llen(keys.at(PARTS.at(rids[1]), keys.deliveries(rids[1]))) == 1
    assert target.hget(keys.METRICS, "custom") == "7"
    # every key the copy made is under a partition prefix, but the global salt and counters
    stray = [
        k for k in target.scan_iter("ab:*") if not k.startswith("ab:{") and k not in (keys.TENANT_SALT, keys.METRICS)
    ]
    assert stray == []

    again = migrate(source, raw_source, target, raw_target, PARTS, TTL)
    assert (again.requests, again.already, again.idempotency_keys) == (0, 12, 0)
    assert sum(target.zcard(keys.at(p, keys.tenant_requests("t1"))) for p in PARTS.prefixes()) == 12


def test_a_source_with_work_in_flight_is_refused_and_nothing_copied(servers):
    source, raw_source, target, raw_target = servers
    requests = Requests(source, TTL)
    requests.submit(Submission("t1", "POST", "Call/", {"to": "1"}, "POST", 60))
    with pytest.raises(NotDrained, match="not drained: 1 requests waiting for a send or a callback"):
        migrate(source, raw_source, target, raw_target, PARTS, TTL)
    assert target.dbsize() == 0
