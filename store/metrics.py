"""Counters kept in Redis, so every web and worker process on every machine adds to one total."""
from __future__ import annotations

from redis import Redis

from store import keys

METRICS = keys.PREFIX + "metrics"


def count(redis: Redis, name: str, n: int = 1) -> None:
    redis.hincrby(METRICS, name, n)


def snapshot(redis: Redis) -> tuple[dict[str, int], dict[str, int]]:
    """(counters, gauges): counters as written by the scripts; gauges read now."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(METRICS)
        for api_class in keys.API_CLASSES:
            pipe.llen(keys.outbox(api_class))
        pipe.zcard(keys.RETRY)
        pipe.zcard(keys.LEASES)
        pipe.zcard(keys.DEADLINES)
        pipe.zcard(keys.DRAINERS)
        counters, *sizes = pipe.execute()
    waiting, sizes = sum(sizes[:len(keys.API_CLASSES)]), sizes[len(keys.API_CLASSES):]
    names = ("retry_scheduled", "in_flight", "awaiting_callback", "drainers")
    return {k: int(v) for k, v in counters.items()}, {"outbox": waiting, **dict(zip(names, sizes))}
