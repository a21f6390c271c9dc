"""What the store does below redis-py's client API, each for a measured gain or a behaviour
redis-py lacks: a cheaper parser check, a script call without the per-command machinery,
and connections that leave a demoted primary.

This is the one module that reaches into redis-py's internals. It was checked against
redis-py 8.1.0 with hiredis 3.5.0, and relies on:

- `redis._parsers._HiredisParser` (private), its attributes `_sock` and `_reader` (set by
  `on_connect`, both None after `on_disconnect`), `_reader.has_data()`, and
  `can_read(timeout)` answering False when idle, True when a reply or decrypted TLS bytes
  (`sock.pending()`) wait, and raising ConnectionError at EOF or once disconnected; a
  Connection builds its parser from the `parser_class` it is given (Parser);
- `Connection.read_response()` raising the ResponseError of an error reply, with the code
  redis-py has a class for (OOM, READONLY, TRYAGAIN) kept as `status_code` and cut from the
  text, other codes (MISCONF, NOREPLICAS, ...) left first in the text, and a script's error,
  which Redis 6.2 words "... -READONLY ...", as a plain ResponseError; and `disconnect()`
  closing the socket (the *PrimaryConnection classes);
- a single-connection client's `connection` attribute (None otherwise), its pool's
  `get_connection()` and `release(connection)`, a connection's `send_packed_command(list of
  bytes)`, `read_response()` (NoScriptError for an unknown script, the connection still
  usable), `disconnect()`, `is_connected`, `connect()` (with Sentinel: to the primary it
  names now) and `retry.call_with_retry(do, fail)` (evalsha);
- redis-py's `Script` keeping its digest in `sha` and answering as `EVALSHA sha 1 key *args`
  does, on the same encoding (store/scripts.py calls both);
- `Sentinel.master_for(name, connection_pool_class=..., **kwargs)` building its pool as
  `connection_pool_class(name, sentinel, **kwargs)`; `SentinelConnectionPool` (a
  `ConnectionPool`) taking `max_connections`, handing out connections through
  `get_connection()` (which raises, and may `release` it first, when the connection
  cannot connect) and taking them back through `release(connection)`, and forgetting
  every connection in `reset()`, which a forked child calls (BlockingSentinelPool);
- a `Sentinel` asking the Sentinels through the clients in its list `sentinels`, each built
  on a pool whose `connection_class` and `connection_kwargs` make its connections
  (bounded_lookups).

- `redis.cluster.RedisCluster` (StoreCluster): built from `url=` (only then does it build each
  node's pool with the `connection_class` it is given, and it drops `parser_class` and
  `health_check_interval` from its arguments, so ClusterConnection sets both itself) plus
  `startup_nodes`; `execute_command`, and `execute` of the ClusterPipeline `pipeline()` returns
  (StorePipeline takes its class, and queues TIME and CONFIG GET with `target_nodes`), raising
  `RedisClusterException` (not a RedisError) with the last node's ConnectionError as its cause
  when it reaches no node, and `SlotNotCoveredError` while its map lacks a slot; redis-py's
  Script calling the client's `script_load(text)` after a NoScriptError; `pubsub()` choosing
  its node from the slot map when it first subscribes; `get_primaries()`,
  `get_default_node()`, `get_node_from_key(key)` and `get_redis_connection(node)` (a plain
  client on that node's pool); `nodes_manager.initialize()` reading the slot map afresh.

tests/contracts/test_redis_py_contract.py checks each of these against the installed redis-py;
tests/test_cluster.py the cluster's, on a real cluster.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeGuard

import hiredis
from gevent.monkey import get_original
from redis import BlockingConnectionPool, Redis
from redis._parsers import _HiredisParser
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.connection import Connection, SSLConnection
from redis.exceptions import (
    AskError,
    ClusterError,
    ConnectionError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError,
)
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection

_poll = get_original("select", "poll")  # the system's poll, also where gevent has patched select
_POLLIN = get_original("select", "POLLIN")


class Parser(_HiredisParser):
    """redis-py's hiredis parser, with a cheap answer to the check it makes before every
    command (`can_read(0)`: is anything left unread on a pooled connection?). redis-py asks
    through select.poll, which under gevent (the web process) is a trip through the hub and
    a Timeout each time. The usual answer, nothing to read, comes here from one real
    poll(0), which never blocks; anything else (data, EOF, TLS bytes, a wait) takes
    redis-py's own path."""

    def can_read(self, timeout: float = 0) -> bool:
        sock, reader = self._sock, self._reader
        if (
            timeout == 0
            and sock is not None
            and reader is not None
            and not reader.has_data()
            and not (hasattr(sock, "pending") and sock.pending())
        ):
            poller = _poll()
            poller.register(sock, _POLLIN)
            if not poller.poll(0):
                return False
        return super().can_read(timeout)


# What Redis answers when it is up but cannot take a write now: a replica (READONLY), out of
# memory (OOM), a failed RDB/AOF write (MISCONF), too few replicas (NOREPLICAS, MASTERDOWN), a
# long script (BUSY), still loading its data (LOADING), a cluster slot moving (TRYAGAIN). Each
# passes, like a lost connection, and a delivery answered 503 for it would be lost.
REFUSALS = frozenset({"READONLY", "OOM", "MISCONF", "NOREPLICAS", "MASTERDOWN", "BUSY", "LOADING", "TRYAGAIN"})
# Redis 6.2 wraps a script's refused call in the script's error: "Error running script (call to
# f_...): @user_script:12: -OOM command not allowed ..."; Redis 7 passes the code on first.
_WRAPPED = re.compile(r": -([A-Z]+) ")


def refusal(error: ResponseError) -> str | None:
    """The refusal code of an error that says Redis cannot take writes now, else None (a bug or
    bad data, which no retry mends). redis-py strips the codes it has a class for (OOM,
    READONLY, LOADING, TRYAGAIN) from the text and keeps them as `status_code`."""
    code = getattr(error, "status_code", None) or str(error).split(" ", 1)[0]
    if code in REFUSALS:
        return code
    if "cannot be used with replica instances" in str(error):
        return "READONLY"  # WAIT on a demoted primary: "ERR WAIT cannot be used with replica instances"
    wrapped = _WRAPPED.search(str(error))
    return wrapped[1] if wrapped and wrapped[1] in REFUSALS else None


class WriteRefused(ConnectionError):
    """Redis answered but refused a command with one of REFUSALS: an outage, retried as one."""

    def __init__(self, code: str) -> None:
        super().__init__(f"Redis refused the command ({code})")
        self.code = code


class _LeavesADemotedPrimary:
    """A connection that turns Redis's refusals (REFUSALS) into WriteRefused, a ConnectionError
    (an outage, retried). Answered READONLY it also closes itself, so that the next attempt
    connects afresh: through Sentinel to the primary it names now, without Sentinel to whatever
    the URL's host resolves to now (a managed Redis fails over by moving its DNS name, and a
    connection left open would go on writing to the old primary, refused, for as long as it
    stays open). redis-py's Sentinel connection does this for a command's READONLY only, not
    for a script's."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except ResponseError as error:
            code = refusal(error)
            if code is None:
                raise
            if code == "READONLY":
                self.disconnect()  # type: ignore[attr-defined]
            raise WriteRefused(code) from error


class PrimaryConnection(_LeavesADemotedPrimary, Connection):
    pass


class PrimarySSLConnection(_LeavesADemotedPrimary, SSLConnection):
    pass


class SentinelPrimaryConnection(_LeavesADemotedPrimary, SentinelManagedConnection):
    pass


class SentinelPrimarySSLConnection(_LeavesADemotedPrimary, SentinelManagedSSLConnection):
    pass


class _ClusterNodeConnection:
    """A cluster node's connection with connect()'s parser and health check: RedisCluster
    drops both from the arguments it passes on to its nodes' pools."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", Parser)
        kwargs.setdefault("health_check_interval", 30)
        super().__init__(**kwargs)


class ClusterConnection(_ClusterNodeConnection, PrimaryConnection):
    pass


class ClusterSSLConnection(_ClusterNodeConnection, PrimarySSLConnection):
    pass


class ClusterUnreachable(ConnectionError):
    """No cluster node answered, or the client's slot map has no node for a slot for the
    moment: an outage like a lost connection (redis-py raises these as RedisClusterException,
    which is not even a RedisError, so no handler of Redis errors would see it)."""


@contextmanager
def _outages_as_outages() -> Iterator[None]:
    """A RedisClusterException that reaching no node caused, and SlotNotCoveredError, raised as
    ClusterUnreachable (a ConnectionError). Other RedisClusterExceptions (a command whose keys
    span slots) are bugs and stay as they are."""
    try:
        yield
    except RedisClusterException as error:
        cause = error.__cause__ or error.__context__
        if isinstance(error, SlotNotCoveredError) or isinstance(cause, (ConnectionError, TimeoutError)):
            raise ClusterUnreachable(str(error)) from error
        raise


class StoreCluster(RedisCluster):
    """redis-py's RedisCluster, whose commands and pipelines raise an outage as an outage
    (_outages_as_outages)."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        with _outages_as_outages():
            return super().execute_command(*args, **kwargs)

    def script_load(self, script: Any) -> str:
        """SCRIPT LOAD on every primary that answers (redis-py's sends it to every primary and
        fails if one does not): the script a primary said NOSCRIPT for (redis-py's Script
        loads it so, then runs it again) must load while another shard is down. A primary that
        missed it says NOSCRIPT in its turn, and loads it then."""
        loaded, failed = None, None
        for node in self.get_primaries():
            try:
                loaded = self.get_redis_connection(node).script_load(script)
            except (ConnectionError, TimeoutError) as error:
                failed = error
        if loaded is None:
            raise failed or ClusterUnreachable("no primary to load a script on")
        return str(loaded)

    def pubsub(self, node: Any = None, host: Any = None, port: Any = None, **kwargs: Any) -> Any:
        """A subscription on the primary of its channel's slot, as the slot map says after
        reading it afresh: a client used only to listen sends no other command, so nothing
        else would ever notice a failover, and a listener reconnecting would go on trying the
        dead primary. (A PUBLISH reaches every node of a cluster, so any node would do.)"""
        with _outages_as_outages():
            self.nodes_manager.initialize()
        return super().pubsub(node, host, port, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        pipe = super().pipeline(transaction, shard_hint)
        pipe.__class__ = StorePipeline  # rather than build it anew from redis-py's list of arguments
        return pipe


class StorePipeline(ClusterPipeline):
    """redis-py's cluster pipeline, raising an outage as an outage, and taking the two keyless
    commands store/health.py pipelines with its keyed reads (redis-py refuses them in a cluster
    pipeline): TIME and CONFIG GET go to the client's default node, a primary, whose clock and
    settings stand for the cluster's (every node should be configured alike)."""

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        with _outages_as_outages():
            return super().execute(raise_on_error)

    def time(self, **kwargs: Any) -> Any:
        return self.execute_command("TIME", target_nodes=self.get_default_node(), **kwargs)

    def config_get(self, pattern: Any = "*", *args: Any, **kwargs: Any) -> Any:
        return self.execute_command("CONFIG GET", pattern, *args, target_nodes=self.get_default_node(), **kwargs)


def cluster(
    nodes: tuple[tuple[str, int], ...],
    *,
    tls: bool,
    retries: int,
    max_connections: int | None,
    queue_timeout: float,
    **options: Any,
) -> RedisCluster:
    """A StoreCluster discovering the cluster from `nodes` (it asks them at once: building one
    needs a node that answers), its node connections ClusterConnection (ClusterSSLConnection
    with `tls`, given the ssl_* `options`), each node's pool holding at most `max_connections`,
    callers queueing for one up to `queue_timeout` seconds."""
    (host, port), *others = nodes
    if max_connections is not None:
        options.update(
            connection_pool_class=BlockingConnectionPool, max_connections=max_connections, timeout=queue_timeout
        )
    with _outages_as_outages():
        return StoreCluster(
            url=f"redis://{host}:{port}",  # the way to a node pool that takes connection_class (no password here)
            startup_nodes=[ClusterNode(h, p) for h, p in others],
            connection_class=ClusterSSLConnection if tls else ClusterConnection,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=retries),
            **options,
        )


def is_cluster(client: object) -> TypeGuard[RedisCluster]:
    """Whether `client` is a cluster's. Not `isinstance`: redis-py's RedisCluster derives from a
    typing Protocol, whose isinstance check walks the protocol's members on every call (about
    1 µs, on every script call); issubclass on the client's type is answered from ABCMeta's cache."""
    return issubclass(type(client), RedisCluster)


@contextmanager
def one_node(client: Redis, key: str) -> Iterator[Redis]:
    """`client` itself, or on a cluster a plain client of the primary serving `key`'s slot: for
    what must run on one connection of the node that holds `key` (a script, then WAIT for its
    replicas: WAIT counts the writes of its own connection, and a cluster client would send it
    to every primary). On a cluster its outages read the slot map again (refreshed_on_outage),
    so that after a failover the next attempt goes to the new primary."""
    if not is_cluster(client):
        yield client
        return
    with refreshed_on_outage(client):
        yield client.get_redis_connection(client.get_node_from_key(key))


@contextmanager
def refreshed_on_outage(client: RedisCluster) -> Iterator[None]:
    """Around commands sent to a node's own client (one_node), not through the cluster
    client: a lost node, a redirection (MOVED, ASK: the slot has another primary now) or
    CLUSTERDOWN reads the cluster's slot map again, so that the next attempt goes to the slot's
    primary now, and is raised as an outage (a ConnectionError), for the caller to retry."""
    try:
        yield
    except (ConnectionError, TimeoutError, AskError, ClusterError) as error:
        try:
            client.nodes_manager.initialize()
        except (RedisClusterException, RedisError):
            pass  # no node answered: the next attempt reads it again
        if isinstance(error, (AskError, ClusterError)):
            raise ClusterUnreachable(f"the slot moved or the cluster is down ({type(error).__name__})") from error
        raise


class BlockingSentinelPool(SentinelConnectionPool):
    """redis-py's pool of connections to the primary Sentinel names, holding at most
    `max_connections`: a caller past them queues for one up to `queue_timeout` seconds, as
    with BlockingConnectionPool (redis-py's own Sentinel pool has no blocking variant, and
    raises past its maximum), so that thousands of greenlets never open thousands of
    connections, nor fail for want of one."""

    def __init__(
        self, service_name: str, sentinel_manager: Any, *, max_connections: int, queue_timeout: float, **kwargs: Any
    ) -> None:
        self.queue_timeout = queue_timeout
        super().__init__(service_name, sentinel_manager, max_connections=max_connections, **kwargs)

    def reset(self) -> None:
        super().reset()  # also in a forked child: every connection forgotten, so every slot free
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._holding: set[Any] = set()  # connections handed out, each holding a slot

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if not self._slots.acquire(timeout=self.queue_timeout):
            raise ConnectionError("No connection available.")  # BlockingConnectionPool's words
        try:
            connection = super().get_connection(*args, **kwargs)
        except BaseException:
            self._slots.release()  # (redis-py's own release of a connection it failed to connect frees none)
            raise
        self._holding.add(connection)
        return connection

    def release(self, connection: Any) -> None:
        super().release(connection)
        if connection in self._holding:  # not one released twice, nor one handed out before a reset
            self._holding.discard(connection)
            self._slots.release()


def bounded_lookups(sentinel: Sentinel, connections: int, queue_timeout: float) -> Sentinel:
    """`sentinel` asking each Sentinel through at most `connections` connections, queueing for
    one up to `queue_timeout` seconds. redis-py's clients of the Sentinels have unbounded pools:
    every connection to the primary made at once (64 greenlets' at a start or a failover) looks
    the primary up at once, and opens (and keeps) a connection to a Sentinel of its own."""
    for i, client in enumerate(sentinel.sentinels):
        pool = client.connection_pool
        sentinel.sentinels[i] = Redis(
            connection_pool=BlockingConnectionPool(
                connection_class=pool.connection_class,
                max_connections=connections,
                timeout=queue_timeout,
                **pool.connection_kwargs,
            )
        )
    return sentinel


def evalsha(client: Redis, sha: str, key: str, args: tuple[object, ...], retried: bool) -> object:
    """EVALSHA `sha` with one key (`key`: the partition's prefix, store/partitions.py) on the
    client's own connection (a single-connection client's) or one of its pool's, without
    redis-py's command machinery around it (its retry wrapper, and the telemetry hooks it
    calls for every command), which cost about as much CPU as the call itself. `retried`: an
    outage is retried as the connection's Retry says, on the same connection closed and opened
    again (with Sentinel: to the new primary), as redis-py does.
    As redis-py does, a connection that fails mid-command is closed, and the error raised; a
    ResponseError (the script's own, or NoScriptError) leaves it open, its answer read.
    A closed connection is opened with `connect()` first: `send_packed_command` would open it
    itself, but to the address it last had, not through Sentinel, so a connection held across
    a failover (a send thread's) would go on trying the dead primary (or, once it is back, a
    replica) instead of the new one.
    A cluster's client takes redis-py's own way: to the primary of `key`'s slot, MOVED and ASK
    followed, an outage retried as many times as the client was built with (`retried` aside)."""
    if is_cluster(client):
        return client.execute_command("EVALSHA", sha, 1, key, *args)
    own = client.connection  # set only for a single-connection client
    pool = client.connection_pool
    connection = own or pool.get_connection()
    packed = [hiredis.pack_command(("EVALSHA", sha, 1, key, *args))]  # type: ignore[arg-type]  # stub: a 1-tuple

    def attempt() -> object:
        if not connection.is_connected:  # closed by an earlier error: see the docstring
            connection.connect()
        connection.send_packed_command(packed)
        return connection.read_response()

    try:
        if retried:
            return connection.retry.call_with_retry(attempt, lambda error: connection.disconnect())
        return attempt()
    except ResponseError:
        raise
    except BaseException:
        connection.disconnect()
        raise
    finally:
        if own is None:
            pool.release(connection)
