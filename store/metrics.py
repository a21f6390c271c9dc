"""Counters kept in Redis, so every web and worker process on every machine adds to one total."""
from __future__ import annotations

from redis import Redis

from store import keys
from store.connection import now_ms

GAUGES = {"retry_scheduled": keys.RETRY, "in_flight": keys.LEASES,
          "awaiting_callback": keys.DEADLINES, "drainers": keys.DRAINERS,
          "notifications_queued": keys.NOTIFY_DUE}


def count(redis: Redis, name: str, n: int = 1) -> None:
    redis.hincrby(keys.METRICS, name, n)


def snapshot(redis: Redis) -> tuple[dict[str, int], dict[str, int]]:
    """(counters, gauges): counters as written by the scripts; gauges read now."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.METRICS)
        for api_class in keys.API_CLASSES:
            pipe.llen(keys.outbox(api_class))
        for key in GAUGES.values():
            pipe.zcard(key)
        pipe.zcount(keys.NOTIFY_DUE, "-inf", now_ms())
        counters, *sizes, notifications_due = pipe.execute()
    waiting = len(keys.API_CLASSES)
    gauges = {"outbox": sum(sizes[:waiting]), **dict(zip(GAUGES, sizes[waiting:], strict=True)),
              "notifications_due": notifications_due}
    return {k: int(v) for k, v in counters.items()}, gauges
