"""Every Redis client of every process is built here: plain or through Sentinel, with or
without TLS, with timeouts and retries set for a service."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from gevent.monkey import get_original
from redis import BlockingConnectionPool, Redis
from redis._parsers import _HiredisParser
from redis.backoff import ExponentialBackoff
from redis.connection import Connection, SSLConnection, parse_url
from redis.exceptions import ConnectionError, ReadOnlyError, ResponseError, TimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

from config import Settings

T = TypeVar("T")

# What a failover, a restart or a pause of Redis looks like to a client: worth another try.
# (A demoted primary's READONLY and Sentinel's MasterNotFoundError are ConnectionErrors too:
# see _LeavesADemotedPrimary.)
OUTAGE = (ConnectionError, TimeoutError, ReadOnlyError)

SENTINEL_TIMEOUT_S = 0.5   # the Sentinels get only these (not the data timeouts): keep asking short

_poll = get_original("select", "poll")   # the system's poll, also where gevent has patched select
_POLLIN = get_original("select", "POLLIN")


class Parser(_HiredisParser):
    """redis-py's hiredis parser, with a cheap answer to the check it makes before every
    command (`can_read(0)`: is anything left unread on a pooled connection?). redis-py asks
    through select.poll, which under gevent (the web process) is a trip through the hub and
    a Timeout each time, about a fifth of a command's CPU. The usual answer, nothing to
    read, comes here from one real poll(0), which never blocks; anything else (data, EOF,
    TLS bytes, a wait) takes redis-py's own path."""

    def can_read(self, timeout: float = 0) -> bool:
        sock, reader = self._sock, self._reader
        if timeout == 0 and sock is not None and reader is not None and not reader.has_data() \
                and not (hasattr(sock, "pending") and sock.pending()):
            poller = _poll()
            poller.register(sock, _POLLIN)
            if not poller.poll(0):
                return False
        return super().can_read(timeout)


def demoted(error: ResponseError) -> bool:
    """Whether Redis refused a write because it is a replica now (a demoted primary): READONLY,
    which Redis 6.2 wraps in a script's error ("Error running script ... -READONLY You can't
    write against a read only replica.")."""
    return isinstance(error, ReadOnlyError) or "-READONLY " in str(error)


class _LeavesADemotedPrimary:
    """A connection that, answered READONLY, closes itself and raises a ConnectionError (an
    outage, retried), so that the next attempt connects afresh: through Sentinel to the primary
    it names now, without Sentinel to whatever the URL's host resolves to now (a managed Redis
    fails over by moving its DNS name, and a connection left open would go on writing to the old
    primary, refused, for as long as it stays open). redis-py's Sentinel connection does this for a
    command's READONLY only, not for a script's."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)   # type: ignore[misc]
        except ResponseError as error:
            if not demoted(error):
                raise
            self.disconnect()   # type: ignore[attr-defined]
            raise ConnectionError("Redis refused a write (READONLY): it is a replica now") from error


class PrimaryConnection(_LeavesADemotedPrimary, Connection):
    pass


class PrimarySSLConnection(_LeavesADemotedPrimary, SSLConnection):
    pass


class SentinelPrimaryConnection(_LeavesADemotedPrimary, SentinelManagedConnection):
    pass


class SentinelPrimarySSLConnection(_LeavesADemotedPrimary, SentinelManagedSSLConnection):
    pass


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is: a URL, or Sentinels naming the primary (the URL then gives only the
    database, credentials and scheme). TLS with `rediss://`."""
    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = "mymaster"
    tls_ca_file: str = ""
    tls_insecure: bool = False

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"

    def tls_options(self) -> dict[str, Any]:
        if not self.tls:
            return {}
        options: dict[str, Any] = {}
        if self.tls_ca_file:
            options["ssl_ca_certs"] = self.tls_ca_file
        if self.tls_insecure:
            options.update(ssl_cert_reqs="none", ssl_check_hostname=False)
        return options


def redis_target(settings: Settings) -> RedisTarget:
    """Where the settings say Redis is."""
    return RedisTarget(settings.redis_url, settings.redis_sentinels, settings.redis_sentinel_master,
                       settings.redis_tls_ca_file, settings.redis_tls_insecure)


def connect(target: str | RedisTarget, *, decode_responses: bool = True, socket_timeout: float = 5,
            retries: int = 2, max_connections: int | None = None, queue_timeout: float = 5) -> Redis:
    """A client that fails fast when Redis is away and reconnects (and, with Sentinel, finds
    the new primary) by itself. `retries=0` for callers that budget their own retries in time:
    with Sentinel, reconnecting retries inside the command's retries, so attempts multiply.
    `max_connections`: at most that many sockets, and callers queue for one (up to `queue_timeout`
    seconds) rather than open more: thousands of greenlets must not open thousands of connections.
    (With Sentinel the pool is redis-py's SentinelConnectionPool, which has no blocking variant:
    the cap is not applied there.)"""
    target = RedisTarget(target) if isinstance(target, str) else target
    options = dict(decode_responses=decode_responses, socket_timeout=socket_timeout,
                   socket_connect_timeout=min(2.0, socket_timeout), health_check_interval=30,
                   retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=retries), parser_class=Parser,
                   **target.tls_options())
    if not target.sentinels:
        options["connection_class"] = PrimarySSLConnection if target.tls else PrimaryConnection
        if max_connections is None:
            return Redis.from_url(target.url, **options)
        pool = BlockingConnectionPool.from_url(target.url, max_connections=max_connections,
                                               timeout=queue_timeout, **options)
        return Redis(connection_pool=pool)
    url_options = {k: v for k, v in parse_url(target.url).items()
                   if k in ("db", "username", "password") or k.startswith("ssl_")}
    sentinel_options = dict(socket_timeout=SENTINEL_TIMEOUT_S, socket_connect_timeout=SENTINEL_TIMEOUT_S)
    if target.tls:
        sentinel_options.update(ssl=True, **target.tls_options())
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)
    return sentinel.master_for(target.master, ssl=target.tls, **url_options, **options,
                               connection_class=SentinelPrimarySSLConnection if target.tls else SentinelPrimaryConnection)


def connect_rq(target: str | RedisTarget) -> Redis:
    """RQ wants bytes, not text; it raises the socket timeout itself around its blocking dequeue."""
    return connect(target, decode_responses=False, socket_timeout=10)


def within(seconds: float, attempt: Callable[[], T], pause_s: float = 0.25) -> T:
    """`attempt()` until it succeeds or `seconds` have passed, retrying only Redis outages
    (then the last error is raised). The budget is time, not a count of attempts: a failover's
    length is known in seconds. Plain blocking sleeps, so it also runs under gevent."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return attempt()
        except OUTAGE:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            time.sleep(min(pause_s, left))


def now_ms() -> int:
    return int(time.time() * 1000)
