"""What the web process shares across requests: settings, Redis, the stores, the job queue."""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from config import WEB_REDIS_POOLS, Settings, web_capacity
from notify_hosts import HostPolicy
from receiver.spool import Spool, SpoolReplayer
from receiver.validation import MAX_WAIT
from store.connection import connect_rq, connect_store, redis_target
from store.deliveries import Deliveries
from store.drain_jobs import enqueue_drain_job
from store.metrics import count
from store.notifications import Notifications
from store.partitions import PartitionCountMismatch, Partitions
from store.quarantine import Quarantine
from store.records import Requests
from store.retries import Retries
from store.tenants import Tenant
from store.waiting import DoneListener, WaiterSlots

log = logging.getLogger(__name__)


# Redis connections of one web process (their sizes are config.WEB_REDIS_POOLS, which the
# file descriptors it reserves follow): for requests (webhook, API), for callbacks, and apart
# from them for ?wait reads, so that thousands of waiters arriving or woken at once never
# queue ahead of a callback. A waiter may queue for its connection as long as it would wait anyway.
WAITER_QUEUE_S = MAX_WAIT


@dataclass
class Services:
    settings: Settings
    redis: Redis
    partitions: Partitions
    requests: Requests
    deliveries: Deliveries
    listener: DoneListener
    queue: Queue
    notifications: Notifications
    notify_hosts: HostPolicy
    quarantine: Quarantine
    retries: Retries
    waiters: WaiterSlots = field(repr=False)
    waiter_requests: Requests = field(repr=False)
    spool: Spool | None = None
    _replayer_pid: int = field(default=0, repr=False)
    _replayer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    key_table: tuple[tuple[str, Tenant], ...] | None = field(default=None, repr=False)  # receiver/auth.py
    tenant_salt: str | None = field(default=None, repr=False)  # what key_table was built with
    # Whether the store's partition count was found to be STORE_PARTITIONS: None until Redis
    # answered; then "" (it is) or why not (/readyz answers 503 with it).
    partition_mismatch: str | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        pools = WEB_REDIS_POOLS
        target = redis_target(settings)
        redis = connect_store(target, max_connections=pools["requests"])  # the store: a cluster's, if set
        # Callbacks budget their own retries in time (CALLBACK_HOLD): no hidden retries, short timeouts.
        callback_redis = connect_store(target, socket_timeout=2, retries=0, max_connections=pools["callbacks"])
        stale_ms = settings.drainer_stale_seconds * 1000
        partitions = Partitions(settings.store_partitions)
        return cls(
            settings=settings,
            redis=redis,
            partitions=partitions,
            requests=Requests(redis, settings.result_ttl, stale_ms, settings.redis_min_replicas, partitions=partitions),
            deliveries=Deliveries(
                callback_redis,
                settings.result_ttl,
                settings.orphan_ttl,
                settings.replay_window,
                settings.redis_min_replicas,
                partitions=partitions,
                max_callback_timeout=settings.max_callback_timeout,
            ),
            listener=DoneListener(connect_store(target, max_connections=pools["listener"]), partitions=partitions),
            queue=Queue(settings.queue_name, connection=connect_rq(target, max_connections=pools["queue"])),
            notifications=Notifications(redis, settings.notify_lease_ms, partitions=partitions),
            notify_hosts=HostPolicy.parse(settings.notify_hosts),
            quarantine=Quarantine(
                callback_redis, settings.quarantine_ttl, settings.quarantine_max_bytes, partitions=partitions
            ),
            retries=Retries(redis, settings.result_ttl, stale_ms, partitions=partitions),
            waiters=WaiterSlots(wait_cap(settings), settings.max_waiters_per_tenant),
            waiter_requests=Requests(
                connect_store(target, max_connections=pools["waiters"], queue_timeout=WAITER_QUEUE_S),
                settings.result_ttl,
                stale_ms,
                partitions=partitions,
            ),
            spool=Spool(settings.spool_dir) if settings.spool_dir else None,
        )

    def check_partitions(self) -> str:
        """The store's partition count against STORE_PARTITIONS (store/partitions.py), read once
        Redis answers: "" when they agree, else the reason, logged as an error. Web starts
        while Redis is away, so this is no start-up refusal: /readyz answers 503 with the
        reason (a load balancer sends this process nothing), and the log says it at once
        (start_partition_check). Raises RedisError while Redis is away."""
        if self.partition_mismatch is None:
            try:
                self.partitions.check(self.redis)
                self.partition_mismatch = ""
            except PartitionCountMismatch as exc:
                self.partition_mismatch = str(exc)
                log.error("not ready: %s", exc)
        return self.partition_mismatch

    def start_partition_check(self) -> None:
        """check_partitions in the background, again every second while Redis is away."""

        def run() -> None:
            while True:
                try:
                    self.check_partitions()
                    return
                except RedisError:
                    time.sleep(1)

        threading.Thread(target=run, name="partition-check", daemon=True).start()

    def release_waiters(self) -> None:
        """Shutting down: answer every waiting client now, with its record as it stands."""
        log.info("stopping: answering %d waiting clients", self.listener.waiting)
        self.listener.release_all()

    def shed_waiters(self, n: int) -> list[Any]:
        """Connections run short: answer up to `n` waiting clients now (the web worker closes
        their connections); what answers each (its greenlet)."""
        shed = self.waiters.shed(n)
        if shed:
            log.warning("connections running short: answering %d waiting clients early", len(shed))
        return shed

    def start_spool_replayer(self) -> None:
        """Replay what this web process (or one before it) spooled, once Redis takes it.
        Once per process: called at start and again on spooling, so a process forked from
        one that started it (gunicorn's preload) runs one of its own."""
        with self._replayer_lock:
            if self.spool is None or self._replayer_pid == os.getpid():
                return
            self._replayer_pid = os.getpid()
            SpoolReplayer(self.spool, self.replay_delivery, self.settings.spool_replay_interval).start()

    def replay_delivery(self, delivery: dict[str, Any]) -> str:
        outcome = self.deliveries.store(**delivery)
        count(self.deliveries.redis, f"spool_replays_{outcome}")
        return outcome

    def ring(self, ring_id: str) -> None:
        """Start a drain job for a new submission. The submission is already safe in the
        outbox: if this fails, the sweep starts one once `ring_id` goes stale."""
        if not ring_id:
            return
        try:
            enqueue_drain_job(self.queue, ring_id, self.settings)
        except RedisError as exc:
            log.warning("could not enqueue drain job (%s); the sweep will", type(exc).__name__)


def wait_cap(settings: Settings) -> int:
    """Waiters this process holds: MAX_WAITERS, unless the open-files limit allows fewer."""
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    _, cap = web_capacity(settings.max_waiters, fd_limit)
    if cap < settings.max_waiters:
        log.warning(
            "open-files limit %d holds only %d waiters (MAX_WAITERS=%d); raise `ulimit -n`",
            fd_limit,
            cap,
            settings.max_waiters,
        )
    return cap


def log_start(settings: Settings) -> None:
    """What this web process uses, in its first lines: enough to see a web and its workers
    disagree (another Redis database, queue or public URL), never a secret."""
    log.info("web starting: %s; %d API keys", settings.summary(), len(settings.api_keys))
    if not settings.verify_signatures:
        log.warning("PLIVO_AUTH_TOKEN is not set (ALLOW_UNSIGNED_CALLBACKS): callbacks are accepted unsigned")


def services() -> Services:
    return current_app.extensions["answerback"]
