"""Every Redis client of every process is built here: plain or through Sentinel, with or
without TLS, with timeouts and retries set for a service; the store's on a Redis Cluster
when REDIS_CLUSTER_NODES names one (connect_store), RQ's always on REDIS_URL (connect_rq).
The parser and connection classes it gives redis-py are in store/redis_internals.py, with
everything else that relies on redis-py's internals.

What a cluster client raises while one shard fails over (its primary killed, measured with
redis-py 8.1 and `cluster-node-timeout 1000`, tests/test_cluster.py): ConnectionError
("connection refused") for the dead primary's slots, each attempt at once, until its replica
takes over, 2-3 s later; after that, redis-py follows the MOVED answer (or its refreshed map)
by itself. The other shards answer throughout, if the nodes run with
`cluster-require-full-coverage no`; with yes, every node answers CLUSTERDOWN
(ClusterDownError, a ResponseError) meanwhile. No node reachable at all: redis-py raises
RedisClusterException, not even a RedisError, which StoreCluster turns into ClusterUnreachable,
a ConnectionError; so is its SlotNotCoveredError. TRYAGAIN (a slot being moved) is a
refusal like the others (WriteRefused). OUTAGE counts ClusterError (CLUSTERDOWN, and redis-py's
"TTL exhausted" after too many redirections) beside these."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from redis import BlockingConnectionPool, Redis
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url
from redis.exceptions import ClusterError, ConnectionError, ReadOnlyError, TimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from config import Settings
from store.redis_internals import (
    BlockingSentinelPool,
    Parser,
    PrimaryConnection,
    PrimarySSLConnection,
    SentinelPrimaryConnection,
    SentinelPrimarySSLConnection,
    WriteRefused,
    bounded_lookups,
    cluster,
    is_cluster,
    refusal,
)

T = TypeVar("T")

# What a failover, a restart or a pause of Redis looks like to a client: worth another try.
# (Redis's refusals of writes, a demoted primary's READONLY among them, are WriteRefused, and
# Sentinel's MasterNotFoundError is a ConnectionError too: see store/redis_internals.py. On a
# cluster: ClusterDownError and redis-py's giving up after many redirections are ClusterError,
# and no node reachable is ClusterUnreachable, a ConnectionError: see the module's docstring.)
OUTAGE = (ConnectionError, TimeoutError, ReadOnlyError, ClusterError)

SENTINEL_TIMEOUT_S = 0.5  # the Sentinels get only these (not the data timeouts): keep asking short
SENTINEL_CONNECTIONS = 2  # to each Sentinel, of one client (lookups of the primary queue for them)


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is: a URL, or Sentinels naming the primary (the URL then gives only the
    database, credentials and scheme). TLS with `rediss://`. `cluster_nodes`: seeds of the
    store's cluster, if it has one (the URL gives it credentials and scheme, not a database).
    The URL may carry a password, so the repr shows it without one."""

    url: str = field(repr=False)
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = "mymaster"
    tls_ca_file: str = ""
    tls_insecure: bool = False
    cluster_nodes: tuple[tuple[str, int], ...] = ()  # the store's cluster (connect_store), with the URL's credentials

    def __repr__(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        shown = parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host).geturl()
        return (
            f"RedisTarget(url={shown!r}, sentinels={self.sentinels!r}, master={self.master!r}, "
            f"cluster_nodes={self.cluster_nodes!r})"
        )

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
    return RedisTarget(
        settings.redis_url,
        settings.redis_sentinels,
        settings.redis_sentinel_master,
        settings.redis_tls_ca_file,
        settings.redis_tls_insecure,
        settings.redis_cluster_nodes,
    )


def connect(
    target: str | RedisTarget,
    *,
    decode_responses: bool = True,
    socket_timeout: float = 5,
    retries: int = 2,
    max_connections: int | None = None,
    queue_timeout: float = 5,
) -> Redis:
    """A client that fails fast when Redis is away and reconnects (and, with Sentinel, finds
    the new primary) by itself. `retries=0` for callers that budget their own retries in time:
    with Sentinel, reconnecting retries inside the command's retries, so attempts multiply.
    `max_connections`: at most that many sockets, and callers queue for one (up to `queue_timeout`
    seconds) rather than open more: thousands of greenlets must not open thousands of connections
    (with Sentinel too: BlockingSentinelPool)."""
    target = RedisTarget(target) if isinstance(target, str) else target
    options = dict(
        decode_responses=decode_responses,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(2.0, socket_timeout),
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=retries),
        parser_class=Parser,
        **target.tls_options(),
    )
    if not target.sentinels:
        options["connection_class"] = PrimarySSLConnection if target.tls else PrimaryConnection
        if max_connections is None:
            return Redis.from_url(target.url, **options)
        pool = BlockingConnectionPool.from_url(
            target.url, max_connections=max_connections, timeout=queue_timeout, **options
        )
        return Redis(connection_pool=pool)
    url_options = {
        k: v for k, v in parse_url(target.url).items() if k in ("db", "username", "password") or k.startswith("ssl_")
    }
    sentinel_options = dict(socket_timeout=SENTINEL_TIMEOUT_S, socket_connect_timeout=SENTINEL_TIMEOUT_S)
    if target.tls:
        sentinel_options.update(ssl=True, **target.tls_options())
    sentinel = bounded_lookups(
        Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options), SENTINEL_CONNECTIONS, queue_timeout=2
    )
    if max_connections is not None:
        options.update(
            connection_pool_class=BlockingSentinelPool, max_connections=max_connections, queue_timeout=queue_timeout
        )
    return sentinel.master_for(
        target.master,
        ssl=target.tls,
        **url_options,
        **options,
        connection_class=SentinelPrimarySSLConnection if target.tls else SentinelPrimaryConnection,
    )


def connect_store(
    target: str | RedisTarget,
    *,
    socket_timeout: float = 5,
    retries: int = 2,
    max_connections: int | None = None,
    queue_timeout: float = 5,
    decode_responses: bool = True,
) -> Redis:
    """The store's client (requests, results, outbox; everything but RQ's queue): connect()'s,
    or with `target.cluster_nodes` a cluster client (redis-py's RedisCluster, as StoreCluster)
    with the same timeouts, parser and connection classes, `retries` as the cluster client's
    own (redis-py retries a lost node, CLUSTERDOWN and a missing slot that many times, having
    read the cluster's map again, and follows MOVED and ASK by itself), and `max_connections`
    to each node. It reaches the cluster as it is built: at least one node must answer
    (ClusterUnreachable, an outage, otherwise). Typed as a Redis: it answers the commands the
    store sends as one does; what reaches below the client API (store/redis_internals.py:
    evalsha, one_node) takes the cluster's way for it."""
    target = RedisTarget(target) if isinstance(target, str) else target
    if not target.cluster_nodes:
        return connect(
            target,
            decode_responses=decode_responses,
            socket_timeout=socket_timeout,
            retries=retries,
            max_connections=max_connections,
            queue_timeout=queue_timeout,
        )
    url = parse_url(target.url)
    client = cluster(
        target.cluster_nodes,
        tls=target.tls,
        retries=retries,
        max_connections=max_connections,
        queue_timeout=queue_timeout,
        decode_responses=decode_responses,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(2.0, socket_timeout),
        **{k: v for k, v in url.items() if k in ("username", "password")},
        **target.tls_options(),
    )
    return cast(Redis, client)


def on_cluster(client: Redis) -> bool:
    """Whether `client` is a cluster's (connect_store with REDIS_CLUSTER_NODES)."""
    return is_cluster(client)


def connect_rq(target: str | RedisTarget, max_connections: int | None = None) -> Redis:
    """RQ wants bytes, not text; it raises the socket timeout itself around its blocking dequeue.
    Always REDIS_URL's Redis (or its Sentinels'), never the store's cluster: RQ does not run on one."""
    return connect(target, decode_responses=False, socket_timeout=10, max_connections=max_connections)


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


__all__ = [
    "OUTAGE",
    "RedisTarget",
    "WriteRefused",
    "connect",
    "connect_rq",
    "connect_store",
    "on_cluster",
    "now_ms",
    "refusal",
    "within",
]
