"""What one worker process keeps across jobs: settings, Redis, the HTTP pool, the send threads."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

from redis import Redis
from rq import Queue

from config import Settings
from store import keys
from store.connection import connect_rq, connect_store, on_cluster, redis_target
from store.notifications import Notifications
from store.outbox import Outbox
from store.partitions import Partitions
from store.rate_limits import Limit, RateLimiter
from store.retries import Retries
from store.sweep import Sweeper
from workers.upstream import PlivoClient

# Set when the worker is asked to stop (SIGTERM): drain jobs stop claiming and finish what is in flight.
shutdown = threading.Event()


@dataclass(frozen=True)
class SendStore:
    """What one send thread writes through: a Redis connection of its own, held for the thread's
    life (a pooled command checks a connection out and back in and polls its socket every time),
    with the outbox and the rate limiter on it. Their scripts go straight to that connection
    (Scripts `direct`): a send thread retries Redis outages itself (workers/sending.py, `within`)."""

    outbox: Outbox
    limiter: RateLimiter


@dataclass
class WorkerContext:
    settings: Settings
    _threads: threading.local = field(default_factory=threading.local, repr=False)

    @cached_property
    def partitions(self) -> Partitions:
        return Partitions(self.settings.store_partitions)

    @cached_property
    def redis(self) -> Redis:
        """The store's client: on REDIS_CLUSTER_NODES's cluster when set."""
        return connect_store(redis_target(self.settings))

    @cached_property
    def rq_redis(self) -> Redis:
        """RQ's: always REDIS_URL's Redis (or its Sentinels')."""
        return connect_rq(redis_target(self.settings))

    @cached_property
    def queue(self) -> Queue:
        return Queue(self.settings.queue_name, connection=self.rq_redis)

    @cached_property
    def outbox(self) -> Outbox:
        return self._outbox(self.redis)

    def _outbox(self, redis: Redis, direct: bool = False) -> Outbox:
        s = self.settings
        return Outbox(
            redis,
            s.result_ttl,
            s.max_drainers,
            s.lease_seconds * 1000,
            s.drainer_stale_seconds * 1000,
            s.redis_min_replicas,
            direct,
            partitions=self.partitions,
        )

    def send_store(self) -> SendStore:
        """The calling thread's own SendStore, made on its first send."""
        store = getattr(self._threads, "store", None)
        if store is None:
            redis = self._cluster_sends if on_cluster(self.redis) else self._own_connection()
            store = self._threads.store = SendStore(self._outbox(redis, direct=True), self._limiter(redis, direct=True))
        return store

    def _own_connection(self) -> Redis:
        return Redis(connection_pool=self.redis.connection_pool, single_connection_client=True)

    @cached_property
    def _cluster_sends(self) -> Redis:
        """On a cluster every send thread shares one client without hidden retries: it routes each
        script to its node's pool, so there is no one connection for a thread to hold."""
        return connect_store(redis_target(self.settings), retries=0)

    @cached_property
    def notifications(self) -> Notifications:
        return Notifications(self.redis, self.settings.notify_lease_ms, partitions=self.partitions)

    @cached_property
    def sweeper(self) -> Sweeper:
        return Sweeper(
            self.redis,
            self.settings.result_ttl,
            drainer_stale_ms=self.settings.drainer_stale_seconds * 1000,
            partitions=self.partitions,
        )

    @cached_property
    def retries(self) -> Retries:
        return Retries(
            self.redis, self.settings.result_ttl, self.settings.drainer_stale_seconds * 1000, partitions=self.partitions
        )

    @cached_property
    def limiter(self) -> RateLimiter:
        return self._limiter(self.redis)

    def _limiter(self, redis: Redis, direct: bool = False) -> RateLimiter:
        limits = {
            keys.CALLS: Limit.parse(self.settings.rate_limit_calls),
            keys.API: Limit.parse(self.settings.rate_limit_api),
        }
        return RateLimiter(redis, self.settings.plivo_auth_id, limits, direct=direct, partitions=self.partitions)

    @cached_property
    def client(self) -> PlivoClient:
        return PlivoClient(self.settings)

    @cached_property
    def pool(self) -> ThreadPoolExecutor:
        threads = self.settings.send_concurrency + self.settings.calls_in_flight
        return ThreadPoolExecutor(threads, thread_name_prefix="send")


_context: WorkerContext | None = None
_pid = 0
_lock = threading.Lock()


def context() -> WorkerContext:
    """The process's context, built on first use (and again in a forked child)."""
    global _context, _pid
    with _lock:
        if _context is None or _pid != os.getpid():
            _context, _pid = WorkerContext(Settings.from_env()), os.getpid()
        return _context
