"""A failover that loses the primary's last writes, at the store: real redis-servers, a primary
and a replica, the replica promoted (REPLICAOF NO ONE, as Sentinel does) and the primary
killed. What the replica had not received when it was promoted is lost, as in a real failover."""
from __future__ import annotations

import uuid

import pytest
from redis import Redis

from local.processes import wait_for
from local.redis_server import RedisServer
from store import keys
from store.connection import connect, now_ms
from store.outbox import Outbox
from store.records import Requests, Submission
from store.sweep import Sweeper

pytestmark = pytest.mark.slow

TTL = 3600
LEASE_MS = 60_000


class Pair:
    """A primary and its replica, each a redis-server of its own."""

    def __init__(self, root, replica_port: int | None = None) -> None:
        self.primary = RedisServer(root / "primary").start()
        self.replica = RedisServer(root / "replica", replica_of=replica_port or self.primary.port).start()
        self.old = connect(self.primary.url)
        self.new = connect(self.replica.url)
        wait_for(self.replica_up, 10, 0.05, "the replica to sync")

    def replica_up(self) -> bool:
        return self.new.info("replication").get("master_link_status") == "up"

    def caught_up(self) -> bool:
        """The replica has everything the primary wrote so far."""
        offset = self.old.info("replication")["master_repl_offset"]
        return self.new.info("replication")["slave_repl_offset"] >= offset

    def fail_over(self) -> None:
        """The replica becomes the primary; the old one is killed, with whatever it did not pass on."""
        self.new.execute_command("REPLICAOF", "NO", "ONE")
        self.primary.kill()

    def stop(self) -> None:
        self.old.close()
        self.new.close()
        self.replica.stop()
        self.primary.stop()


@pytest.fixture
def pair(workdir):
    built = Pair(workdir / f"lag-{uuid.uuid4().hex[:6]}")
    yield built
    built.stop()


def submitted(requests: Requests) -> str:
    sub = Submission(tenant="t", method="POST", path="Message/", params={"src": "1", "dst": "2", "text": "x"},
                     callback_method="POST", callback_timeout=3600)
    return requests.submit(sub).record.fields["request_id"]


def timers(redis: Redis, rid: str) -> list[str]:
    """Where the sweep (or a drain job) will act on the request: outbox, retry, lease, deadline."""
    found = [k for k in (keys.RETRY, keys.LEASES, keys.DEADLINES) if redis.zscore(k, rid) is not None]
    return found + [k for k in map(keys.outbox, keys.API_CLASSES) if rid in redis.lrange(k, 0, -1)]


@pytest.mark.parametrize("verdict", ["accepted", "unknown"])
def test_a_claim_that_lost_its_sending_mark_in_a_failover_is_settled_by_its_holder(pair, verdict):
    """REDIS_MIN_REPLICAS=0: the claim reached the replica, the `sending` mark did not, and the
    request left. The worker holding the claim settles it on the new primary; the lease running
    out must not send it again, and it is never left queued with nothing to wake it."""
    outbox = Outbox(pair.old, TTL, max_drainers=1, lease_ms=LEASE_MS)
    rid = submitted(Requests(pair.old, TTL))
    item, = outbox.claim("drainer-1", {keys.API: 1}, [], may_leave=False).items
    wait_for(pair.caught_up, 10, 0.02, "the replica to have the claim")
    pair.new.execute_command("REPLICAOF", "NO", "ONE")   # promoted: the mark below is lost
    assert outbox.mark_sending(item) == 1
    pair.primary.kill()

    survivor = Outbox(pair.new, TTL, max_drainers=1, lease_ms=LEASE_MS)
    if verdict == "accepted":
        survivor.register_api_id(item.rid, "api-1", 3600, item.claim_id)
    else:
        survivor.unknown_outcome(item, {"reason": "timeout"})
    after_lease = now_ms() + LEASE_MS + 1000
    Sweeper(pair.new, TTL).sweep(after_lease)
    record = Requests(pair.new, TTL).get(rid).fields
    again = survivor.claim("drainer-2", {keys.API: 1}, [], may_leave=True)
    assert (record["status"], record.get("attempts")) == ("pending", "1")
    assert timers(pair.new, rid) == [keys.DEADLINES]
    assert again.items == []
