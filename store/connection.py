"""One Redis client per process, with timeouts and retries set for a service."""
from __future__ import annotations

import time

from redis import BlockingConnectionPool, Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def connect(url: str, max_connections: int | None = None, queue_timeout: float = 5) -> Redis:
    """A client that fails fast when Redis is away (so web can answer 503) and reconnects by itself.
    `max_connections`: at most that many sockets, and callers queue for one (up to `queue_timeout`
    seconds) rather than open more: thousands of greenlets must not open thousands of connections."""
    options = dict(decode_responses=True, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30,
                   retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2))
    if max_connections is None:
        return Redis.from_url(url, **options)
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=queue_timeout, **options)
    return Redis(connection_pool=pool)


def now_ms() -> int:
    return int(time.time() * 1000)
