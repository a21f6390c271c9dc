"""What the web process shares across requests: settings, Redis, the stores, the job queue."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from config import Settings
from notify_hosts import HostPolicy
from store import connect
from store.callbacks import Deliveries
from store.drain_jobs import enqueue_drain_job
from store.notifications import Notifications
from store.records import Requests
from store.waiting import DoneListener

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    redis: Redis
    requests: Requests
    deliveries: Deliveries
    listener: DoneListener
    queue: Queue
    notifications: Notifications
    notify_hosts: HostPolicy
    wait_slots: threading.BoundedSemaphore = field(repr=False)
    key_table: tuple[tuple[str, str], ...] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: Settings) -> "Services":
        redis = connect(settings.redis_url)
        rq_redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        slots = max(1, int(settings.web_threads * settings.wait_share))
        return cls(
            settings=settings,
            redis=redis,
            requests=Requests(redis, settings.result_ttl, settings.drainer_stale_seconds * 1000),
            deliveries=Deliveries(redis, settings.result_ttl, settings.orphan_ttl, settings.replay_window),
            listener=DoneListener(connect(settings.redis_url)),
            queue=Queue(settings.queue_name, connection=rq_redis),
            notifications=Notifications(redis, settings.notify_lease_ms),
            notify_hosts=HostPolicy.parse(settings.notify_hosts),
            wait_slots=threading.BoundedSemaphore(slots),
        )

    def ring(self, ring_id: str) -> None:
        """Start a drain job for a new submission. The submission is already safe in the
        outbox: if this fails, the sweep starts one once `ring_id` goes stale."""
        if not ring_id:
            return
        try:
            enqueue_drain_job(self.queue, ring_id, self.settings)
        except RedisError as exc:
            log.warning("could not enqueue drain job (%s); the sweep will", type(exc).__name__)


def services() -> Services:
    return current_app.extensions["answerback"]
