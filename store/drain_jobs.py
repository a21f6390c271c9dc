"""Starting a drain job: an RQ job enqueued by its dotted name, so that web, the sweep and
drain jobs themselves start one with a queue alone, without importing the worker's code."""

from __future__ import annotations

from redis import Redis
from rq import Queue

from config import Settings
from store import keys
from store.connection import now_ms
from store.partitions import ONE, Partitions

DRAIN_JOB = "workers.jobs.drain"


def enqueue_drain_job(queue: Queue, ring_id: str, settings: Settings) -> None:
    """Start the drain job `ring_id`, already registered as a drainer in Redis (the job's
    RQ id is the same, so a second enqueue of one ring id cannot start two)."""
    queue.enqueue(
        DRAIN_JOB,
        ring_id,
        job_id=ring_id,
        job_timeout=settings.drain_seconds + 3 * settings.plivo_timeout + 120,
        result_ttl=60,
        failure_ttl=86400,
        description="drain the outbox",
    )


def live_drainers(redis: Redis, stale_ms: int, now: int | None = None, partitions: Partitions = ONE) -> int:
    """Drain jobs that heart-beat within `stale_ms` (ms) of `now` (default: the clock). A dead
    one stays registered until a sweep or a claim drops it, and with no worker running
    nothing does: counting them all would report a drain job no process runs. A drain job is
    a drainer of every partition it claims from: counted once."""
    now = now_ms() if now is None else now
    if partitions.count == 1:
        return int(redis.zcount(keys.DRAINERS, now - stale_ms, "+inf"))
    with redis.pipeline(transaction=False) as pipe:
        for prefix in partitions.prefixes():
            pipe.zrangebyscore(keys.at(prefix, keys.DRAINERS), now - stale_ms, "+inf")
        return len({drainer for listed in pipe.execute() for drainer in listed})
