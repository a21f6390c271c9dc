"""Wake the clients that wait on a request the moment it finishes.

One Redis pub/sub subscription per process feeds in-process events, so any
number of waiting clients costs one connection and no polling of Redis. Under
gevent (the web process) the listener is a greenlet and each event a gevent
Event, so one message wakes its waiters without a thread each.

A finish published while the subscription was down is never lost for long:
after every (re)subscription, confirmed by Redis, every waiter is woken to
re-read its record, so a waiter misses nothing beyond the reconnect itself.

Who may wait at all, and who is answered early when connections run short, is
WaiterSlots's to say.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import RedisError

from store import keys
from store.partitions import ONE, Partitions

log = logging.getLogger(__name__)

RECONNECT_PAUSE_S = 0.5


class DoneListener:
    """Hears every partition's `done` channel (a finish publishes on its own partition's): one
    SUBSCRIBE of them all on one connection. On a cluster a classic PUBLISH reaches every node,
    so any node's connection hears them."""

    def __init__(self, redis: Redis, *, partitions: Partitions = ONE) -> None:
        self._redis = redis
        self._channels = [keys.at(prefix, keys.DONE_CHANNEL) for prefix in partitions.prefixes()]
        self._lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = {}
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.released = False

    @contextmanager
    def watching(self, rid: str) -> Iterator[threading.Event]:
        """An event set when `rid` finishes, after a resubscription, or on release;
        register before reading the record."""
        self._ensure_running()
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(rid, set()).add(event)
        if self.released:
            event.set()
        try:
            yield event
        finally:
            with self._lock:
                group = self._waiters.get(rid, set())
                group.discard(event)
                if not group:
                    self._waiters.pop(rid, None)

    @property
    def waiting(self) -> int:
        """Waiters registered now."""
        with self._lock:
            return sum(len(group) for group in self._waiters.values())

    def release_all(self) -> None:
        """The process is stopping: wake every waiter, and any later one at once."""
        self.released = True
        self._wake_all()

    def _ensure_running(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._subscribed.clear()
            self._thread = threading.Thread(target=self._run, name="done-listener", daemon=True)
            self._thread.start()
        self._subscribed.wait(timeout=2)

    def _run(self) -> None:
        while True:
            try:
                self._listen()
            except RedisError as exc:
                log.warning("done listener lost Redis (%s); reconnecting", type(exc).__name__)
            except Exception:
                log.exception("done listener failed; restarting")
            self._subscribed.clear()
            time.sleep(RECONNECT_PAUSE_S)

    def _listen(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            pubsub.subscribe(*self._channels)
            while True:
                message = pubsub.get_message(timeout=1.0)
                if not message:
                    continue
                if message["type"] == "message":
                    self._wake(message["data"])
                elif message["type"] == "subscribe" and message["data"] == len(self._channels):
                    # Redis confirmed the last channel: from here on nothing is missed
                    self._subscribed.set()
                    self._wake_all()
        finally:
            pubsub.close()

    def _wake(self, rid: str) -> None:
        with self._lock:
            events = list(self._waiters.get(rid, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        """Let every waiter re-read its record (a finish may have gone by unseen)."""
        with self._lock:
            events = [e for group in self._waiters.values() for e in group]
        for event in events:
            event.set()


class Waiter:
    """One client waiting on ?wait: its tenant, what answers it (the web worker's connection),
    the event that wakes it (set once it watches its request), and whether it was shed."""

    __slots__ = ("event", "owner", "shed", "tenant")

    def __init__(self, tenant: str, owner: object) -> None:
        self.tenant, self.owner = tenant, owner
        self.event: threading.Event | None = None
        self.shed = False


class WaiterSlots:
    """Who may wait in this process: at most `cap` clients, and `per_tenant` of one tenant, so
    that one tenant's crowd cannot take every slot from the others. When the process runs
    short of connections, some waiters are shed (answered at once, with their record as it
    stands, as past the cap): a waiter asks again, while an idle webhook connection closed
    under a sender may lose the callback sent on it."""

    def __init__(self, cap: int, per_tenant: int) -> None:
        self.cap, self.per_tenant = cap, per_tenant
        self._lock = threading.Lock()
        self._by_tenant: dict[str, dict[Waiter, None]] = {}  # oldest first
        self._held = 0

    @contextmanager
    def taken(self, tenant: str, owner: object) -> Iterator[Waiter | None]:
        """A slot for the duration, or None when this process or this tenant holds its cap."""
        with self._lock:
            group = self._by_tenant.get(tenant, {})
            if self._held >= self.cap or len(group) >= self.per_tenant:
                waiter = None
            else:
                waiter = Waiter(tenant, owner)
                self._by_tenant.setdefault(tenant, group)[waiter] = None
                self._held += 1
        try:
            yield waiter
        finally:
            if waiter is not None:
                with self._lock:
                    self._drop(waiter)

    def shed(self, n: int) -> list[object]:
        """End up to `n` waits now, the oldest of the tenant holding the most first; answer
        their owners (which then close their connections)."""
        shed: list[Waiter] = []
        with self._lock:
            while len(shed) < n and self._by_tenant:
                group = max(self._by_tenant.values(), key=len)
                waiter = next(iter(group))
                self._drop(waiter)
                waiter.shed = True
                shed.append(waiter)
        for waiter in shed:
            if waiter.event is not None:
                waiter.event.set()
        return [waiter.owner for waiter in shed]

    def _drop(self, waiter: Waiter) -> None:
        group = self._by_tenant.get(waiter.tenant)
        if group is None or waiter not in group:
            return  # shed already
        del group[waiter]
        self._held -= 1
        if not group:
            del self._by_tenant[waiter.tenant]
