"""One endpoint cannot hold up the others' notifications: due notifications are
claimed host by host, an attempt ends at NOTIFY_TIMEOUT whatever the endpoint
does, and a claim costs Redis the same whatever the backlog. Real workers, real
sockets; the backlogs are made through the store's own scripts, as a worker
finishing requests makes them."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from itertools import pairwise

import pytest

from config import Settings
from local.processes import wait_for
from local.redis_server import RedisServer, free_port
from notify_hosts import HostPolicy
from store import connect, keys
from store.notifications import Notifications
from store.outbox import Outbox
from store.records import Requests, Submission
from tests.support.notify_receiver import NEW_SECRET, Receiver
from workers.notifying import Sender

TIMEOUT = 2  # NOTIFY_TIMEOUT of these tests' workers, seconds


class Silent:
    """An endpoint that accepts every connection and never answers: what a hung
    application or a black-holed load balancer looks like from outside."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", free_port()), backlog=2048)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                return

    def stop(self) -> None:
        """Close the listener, wait for the accepting thread to see it (a connection it takes
        meanwhile is held too), then close every held connection."""
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not, on Linux)
        self.listener.close()
        self.accepting.join(5)
        for conn in self.held:
            conn.close()


class Trickle:
    """An endpoint that reads the request, answers `head` (by default its status line),
    then one byte a second: each read of the sender gets something, so only a deadline on
    the whole attempt ends it. Records when each connection opened and closed."""

    def __init__(self, head: bytes = b"HTTP/1.1 200 OK\r\nX-Slow: ") -> None:
        self.head = head
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.listener.getsockname()[1]
        self.connections: list[list[float]] = []  # [opened, closed or 0]
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _accept(self) -> None:
        while True:
            try:
                conn = self.listener.accept()[0]
            except OSError:
                return
            serving = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(serving)
            serving.start()

    def _serve(self, conn: socket.socket) -> None:
        times = [time.monotonic(), 0.0]
        self.connections.append(times)
        with conn:
            conn.settimeout(1.0)  # every wait ends within a second, so stop() can join this thread
            if self._answer_head(conn):
                self._trickle(conn)
        times[1] = time.monotonic()

    def _answer_head(self, conn: socket.socket) -> bool:
        """Read the request, answer `head`: False when the sender went away first."""
        while not self.stopping.is_set():
            try:
                if not conn.recv(65536):
                    return False
                conn.sendall(self.head)
                return True
            except TimeoutError:
                continue
            except OSError:
                return False
        return False

    def _trickle(self, conn: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                if conn.recv(1) == b"":  # the sender closed the connection
                    break
            except TimeoutError:
                pass
            except OSError:
                break
            try:
                conn.sendall(b"x")
            except OSError:
                break

    def overlapping(self) -> bool:
        """Two connections open at once."""
        spans = sorted((opened, closed or float("inf")) for opened, closed in self.connections)
        return any(later[0] < earlier[1] for earlier, later in pairwise(spans))

    def stop(self) -> None:
        """Close the listener and every connection (each serving thread ends within a second),
        so that no socket is left for the garbage collector to find open."""
        self.stopping.set()
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for serving in self.threads:
            serving.join(5)


def finish_requests(redis, n: int, notify_url: str) -> list[str]:
    """N requests finished the way a worker finishes them, each queuing its notification."""
    requests, outbox = Requests(redis, 3600), Outbox(redis, 3600, max_drainers=1)
    host = HostPolicy.parse(("127.0.0.1",)).check_url(notify_url).authority
    rids = [
        requests.submit(
            Submission("t", "POST", "Message/", {"text": "hi"}, "POST", 60, notify_url=notify_url, notify_host=host)
        ).record.fields["request_id"]
        for _ in range(n)
    ]
    while claimed := outbox.claim("test", {keys.API: 500}, [], may_leave=False).items:
        for item in claimed:
            outbox.mark_sending(item)
            outbox.completed(item, {"message": "sent"})
    return rids


@pytest.fixture
def silent() -> Iterator[Silent]:
    endpoint = Silent()
    yield endpoint
    endpoint.stop()


@pytest.mark.slow
def test_a_dead_endpoints_backlog_does_not_hold_up_another_hosts_notification(make_stack, sandbox, silent):
    """1,500 notifications due to an endpoint that never answers, then one to a live
    receiver: it arrives within NOTIFY_TIMEOUT + 5 s, while the dead one has all the
    room it may have."""
    live = Receiver().start()
    stack = make_stack(
        db=12,
        workers=0,
        NOTIFY_HOSTS="127.0.0.1",
        WEBHOOK_SECRET=NEW_SECRET,
        NOTIFY_TIMEOUT=str(TIMEOUT),
        NOTIFY_CONCURRENCY="32",
        NOTIFY_HOST_CONCURRENCY="8",
    )
    try:
        finish_requests(stack.redis, 1500, silent.url)
        stack.start_worker()
        wait_for(lambda: len(silent.held) >= 8, 20, message="the dead endpoint to hold its 8 connections")
        [rid] = finish_requests(stack.redis, 1, live.url)
        queued = time.monotonic()
        wait_for(lambda: live.events(rid), TIMEOUT + 5, 0.02, "the live receiver's notification")
        took = time.monotonic() - queued
    finally:
        live.stop()
    assert took <= TIMEOUT + 5
    assert len(silent.held) <= 8 * (1 + int(took // TIMEOUT) + 1)


@pytest.mark.slow
def test_a_trickling_endpoint_is_cut_at_notify_timeout_and_never_sent_twice_at_once(make_stack, sandbox):
    """Every read of the attempt gets a byte within a second, so no per-read timeout
    fires; the attempt still ends at NOTIFY_TIMEOUT, is tried again after the schedule's
    delay, and two attempts of the event are never open at once (the lease is longer
    than an attempt)."""
    trickle = Trickle()
    stack = make_stack(
        db=13, NOTIFY_HOSTS="127.0.0.1", WEBHOOK_SECRET=NEW_SECRET, NOTIFY_TIMEOUT=str(TIMEOUT), NOTIFY_SCHEDULE="2,2"
    )
    notifications = Notifications(stack.redis, Settings.from_env(stack.env).notify_lease_ms)
    try:
        [rid] = finish_requests(stack.redis, 1, trickle.url)
        wait_for(
            lambda: trickle.overlapping() or len(notifications.attempts(rid)) >= 2,
            40,
            0.02,
            "two attempts, or two connections open at once",
        )
        assert not trickle.overlapping()
        tried = notifications.attempts(rid)
    finally:
        trickle.stop()
    for attempt in tried[:2]:
        assert attempt["outcome"] == "retry" and "NOTIFY_TIMEOUT" in attempt["error"]
        assert TIMEOUT * 1000 - 100 <= attempt["duration_ms"] <= TIMEOUT * 1000 + 500
    assert len({a["webhook_id"] for a in tried}) == 1


def test_an_answer_whose_body_trickles_is_taken_at_its_headers():
    """The status is the answer: the body is never waited for, so a trickling one costs nothing."""
    trickle = Trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    sender = Sender(Settings(notify_hosts=("127.0.0.1",), webhook_secrets=(NEW_SECRET,), notify_timeout=TIMEOUT))
    try:
        started = time.monotonic()
        answer = sender.post(trickle.url, "msg_1", b"{}")
        took = time.monotonic() - started
    finally:
        trickle.stop()
    assert answer.delivered and took < TIMEOUT / 2


@pytest.fixture
def own_redis(tmp_path) -> Iterator[object]:
    """A Redis of its own: its command counts are this test's alone."""
    server = RedisServer(tmp_path / "redis").start()
    client = connect(server.url)
    yield client
    client.close()
    server.stop()


def commands_run(redis) -> int:
    return sum(
        int(stats["calls"])
        for name, stats in redis.info("commandstats").items()
        if name not in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_info", "cmdstat_config")
    )


def test_a_claim_costs_the_same_whatever_the_backlog_of_a_host_without_room(own_redis):
    """A host whose room the notifier has used up is skipped at the cost of one look, not one
    per notification due to it; the other host's notification is taken."""
    notifications = Notifications(own_redis, lease_ms=60_000)
    dead = "http://127.0.0.1:9/hook"
    dead_host = HostPolicy.parse(("127.0.0.1",)).check_url(dead).authority
    finish_requests(own_redis, 1500, dead)
    [live] = finish_requests(own_redis, 1, "http://127.0.0.1:10/hook")
    own_redis.config_resetstat()
    claimed = notifications.claim(32, {dead_host: 0}, 8)
    assert [due.rid for due in claimed] == [live]
    assert commands_run(own_redis) < 40


def test_notifications_queued_without_host_queues_are_moved_into_them_and_sent(own_redis):
    """What a version without host queues left due (one zset for every host) is moved into
    the host queues by the claims, a batch at a time, keeping each due time: all of it is
    claimed, a leased one only once its lease is over."""
    notifications = Notifications(own_redis, lease_ms=60_000)
    rids = finish_requests(own_redis, 300, "http://127.0.0.1:9/hook") + finish_requests(
        own_redis, 30, "http://127.0.0.1:10/hook"
    )
    leased = rids[0]
    due = dict(own_redis.zrange(keys.NOTIFY_DUE, 0, -1, withscores=True))
    due[leased] += 3_600_000
    own_redis.delete(keys.NOTIFY_DUE, keys.NOTIFY_HOSTS, *own_redis.scan_iter(keys.notify_queue("*")))
    own_redis.zadd(keys.NOTIFY_DUE_UNSPLIT, due)
    taken: list[str] = []
    while claimed := notifications.claim(32, {}, 1000):
        taken += [d.rid for d in claimed]
    assert sorted(taken) == sorted(set(rids) - {leased})
    assert not own_redis.exists(keys.NOTIFY_DUE_UNSPLIT)
    assert own_redis.zscore(keys.NOTIFY_DUE, leased) == due[leased]
