"""One Redis client per process, with timeouts and retries set for a service."""
from __future__ import annotations

import time

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def connect(url: str) -> Redis:
    """A client that fails fast when Redis is away (so web can answer 503) and reconnects by itself."""
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
    )


def now_ms() -> int:
    return int(time.time() * 1000)
