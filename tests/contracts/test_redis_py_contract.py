"""What store/redis_internals.py relies on in redis-py (and hiredis), checked against the installed
versions with a real Redis. A failure here after an upgrade means redis-py changed something the
store reaches into: re-read store/redis_internals.py (its docstring lists what it relies on).

The parser's `can_read(0)` is asked in each state a pooled connection can be in (idle, a reply
on the socket, a reply in hiredis's buffer, decrypted TLS bytes, EOF, disconnected), and must
answer as redis-py's own parser does."""

from __future__ import annotations

import inspect
import select
import socket
import uuid
from collections.abc import Iterator

import pytest
from redis import BlockingConnectionPool, Redis
from redis._parsers import _HiredisParser
from redis.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError, NoScriptError, ReadOnlyError, ResponseError
from redis.retry import Retry

from local.processes import wait_for
from local.redis_server import SentinelServer, free_port
from store import keys
from store.connection import RedisTarget, connect
from store.records import Requests, Submission
from store.redis_internals import BlockingSentinelPool, Parser, PrimaryConnection, evalsha
from store.scripts import Scripts, source
from tests.tls_terminator import tls_in_front_of

RE_READ = "re-read store/redis_internals.py"
ECHO = "return {ARGV[1], tonumber(ARGV[2]) + 1, ARGV[3], ARGV[4]}"
FAILS = "return redis.error_reply('ERR the script refused')"
READONLY = "return redis.error_reply('READONLY You can not write against a read only replica.')"


def can_read(parser: Parser) -> tuple[object, object]:
    """What ours and redis-py's own parser answer to `can_read(0)`: True, False or ConnectionError."""

    def ask(method) -> object:
        try:
            return method(parser, 0)
        except ConnectionError:
            return ConnectionError

    return ask(Parser.can_read), ask(_HiredisParser.can_read)


def readable(sock: socket.socket) -> bool:
    """Whether the kernel holds bytes (or EOF) for `sock`, waiting up to 5 s for them."""
    return bool(select.select([sock], [], [], 5)[0])


@pytest.fixture
def connection(redis_server) -> Iterator[Connection]:
    connection = PrimaryConnection(port=redis_server.port, parser_class=Parser)
    connection.connect()
    yield connection
    connection.disconnect()


def test_a_connection_builds_its_parser_from_the_class_it_is_given(connection):
    parser = connection._parser
    assert type(parser) is Parser, f"redis-py no longer builds its parser from parser_class: {RE_READ}"
    assert parser._sock is not None and parser._sock.fileno() >= 0 and parser._reader is not None, (
        f"redis-py's hiredis parser no longer keeps _sock and _reader once connected: {RE_READ}"
    )
    connection.disconnect()
    assert parser._sock is None and parser._reader is None, (
        f"redis-py's hiredis parser no longer forgets _sock and _reader once disconnected: {RE_READ}"
    )


def test_an_idle_connection_has_nothing_to_read(connection):
    connection.send_command("PING")
    assert connection.read_response() in ("PONG", b"PONG")
    assert can_read(connection._parser) == (False, False), (
        f"redis-py's parser changed what can_read(0) answers on an idle connection: {RE_READ}"
    )


def test_a_reply_on_the_socket_can_be_read(connection):
    connection.send_command("PING")
    assert readable(connection._parser._sock)
    assert can_read(connection._parser) == (True, True), (
        f"redis-py's parser changed what can_read(0) answers with a reply on the socket: {RE_READ}"
    )
    assert connection.read_response() in ("PONG", b"PONG")


def test_a_reply_left_in_hiredis_buffer_can_be_read(connection):
    connection.send_packed_command(connection.pack_commands([("PING",), ("ECHO", "left")]))
    sock = connection._parser._sock
    wait_for(
        lambda: len(sock.recv(64, socket.MSG_PEEK)) == len(b"+PONG\r\n$4\r\nleft\r\n"),
        5,
        message="both replies on the socket",
    )
    assert connection.read_response() in ("PONG", b"PONG")
    assert connection._parser._reader.has_data(), "hiredis read both replies at once: the state under test"
    assert can_read(connection._parser) == (True, True), (
        f"redis-py's parser changed what can_read(0) answers with a reply in hiredis's buffer: {RE_READ}"
    )
    assert connection.read_response() in ("left", b"left")


def test_a_connection_closed_by_redis_is_refused(connection, redis):
    connection.send_command("CLIENT", "ID")
    redis.client_kill_filter(_id=connection.read_response())
    assert readable(connection._parser._sock)
    assert can_read(connection._parser) == (ConnectionError, ConnectionError), (
        f"redis-py's parser changed what can_read(0) answers at EOF: {RE_READ}"
    )


def test_a_disconnected_connection_is_refused(connection):
    connection.disconnect()
    assert can_read(connection._parser) == (ConnectionError, ConnectionError), (
        f"redis-py's parser changed what can_read(0) answers once disconnected: {RE_READ}"
    )


def test_decrypted_tls_bytes_can_be_read(redis_server, redis, tmp_path):
    """Two replies Redis writes at once arrive in one TLS record; reading exactly the first
    leaves the second decrypted in the SSL socket, where poll cannot see it."""
    value = "v" * 100
    redis.set("contract:tls", value)
    first_reply = len(f"${len(value)}\r\n{value}\r\n")
    with tls_in_front_of(redis_server.port, tmp_path) as (url, ca_file):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        connection = SSLConnection(
            host="127.0.0.1", port=port, ssl_ca_certs=ca_file, parser_class=Parser, socket_read_size=first_reply
        )
        try:
            connection.connect()
            connection.send_packed_command(connection.pack_commands([("GET", "contract:tls"), ("PING",)]))
            sock = connection._parser._sock
            assert readable(sock)
            assert connection.read_response() in (value, value.encode())
            assert sock.pending() and not select.select([sock], [], [], 0)[0], "the state under test"
            assert can_read(connection._parser) == (True, True), (
                f"redis-py's parser changed what can_read(0) answers with TLS bytes pending: {RE_READ}"
            )
            assert connection.read_response() in ("PONG", b"PONG")
        finally:
            connection.disconnect()
            redis.delete("contract:tls")


@pytest.mark.parametrize("decode", [True, False])
@pytest.mark.parametrize("retried", [False, True])
def test_evalsha_answers_as_redis_pys_script_does(redis_server, decode, retried):
    client = connect(redis_server.url, decode_responses=decode, max_connections=1, queue_timeout=1)
    try:
        script = client.register_script(ECHO)
        args = ("text", 41, b"bytes", 2.5)
        expected = script(args=list(args))
        assert evalsha(client, script.sha, "k", args, retried) == expected, (
            f"redis-py's Script answers differently from EVALSHA on its connection: {RE_READ}"
        )
        failing = client.register_script(FAILS)
        with pytest.raises(ResponseError) as theirs:
            failing()
        with pytest.raises(ResponseError) as ours:
            evalsha(client, failing.sha, "k", (), retried)
        assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value)), (
            f"redis-py reads a script's error differently: {RE_READ}"
        )
        assert evalsha(client, script.sha, "k", args, retried) == expected, (
            f"redis-py's connection is not released, or not usable, after a script's error: {RE_READ}"
        )
    finally:
        client.close()


def test_evalsha_of_a_script_redis_does_not_know_raises_noscripterror(redis_server):
    client = connect(redis_server.url, max_connections=1, queue_timeout=1)
    try:
        with pytest.raises(NoScriptError):
            evalsha(client, "0" * 40, "k", (), False)
        assert client.ping(), f"redis-py's connection is not released after NOSCRIPT: {RE_READ}"
    finally:
        client.close()


def test_scripts_answer_as_redis_pys_script_does_after_redis_forgot_them(redis):
    """Redis forgets its scripts on a restart or a failover: Scripts loads one again, as
    redis-py's Script does."""
    submission = Submission(f"contract-{uuid.uuid4().hex[:8]}", "POST", "Call/", {"to": "1"}, "POST", 60)
    rid = Requests(redis, 60).submit(submission).record.fields["request_id"]
    scripts = Scripts(redis)
    expected = redis.register_script(source("read"))(keys=[keys.PREFIX], args=[rid])
    assert expected, "a stored record to read: the state under test"
    for run in (scripts.once, scripts.retried, scripts):
        redis.script_flush()
        assert run("read", rid) == expected, f"Scripts and redis-py's Script answer differently: {RE_READ}"


def test_a_connection_cut_mid_command_is_closed_or_retried(redis_server, redis):
    """On a single-connection client (a worker's send thread), nothing checks the connection
    before the command: the cut shows while it runs."""
    pool = BlockingConnectionPool.from_url(redis_server.url, max_connections=1, timeout=1, retry=Retry(_NoBackoff(), 1))
    client = Redis(connection_pool=pool, single_connection_client=True)
    assert client.connection is not None, f"redis-py's single-connection client has no `connection`: {RE_READ}"
    try:
        script = client.register_script("return 'answered'")
        script()
        redis.client_kill_filter(_id=client.client_id())
        assert evalsha(client, script.sha, "k", (), True) == b"answered", (
            f"redis-py's Retry no longer retries an outage on a connection opened again: {RE_READ}"
        )
        redis.client_kill_filter(_id=client.client_id())
        with pytest.raises(ConnectionError):
            evalsha(client, script.sha, "k", (), False)
        assert evalsha(client, script.sha, "k", (), False) == b"answered", (
            f"redis-py's connection does not open again after it was closed: {RE_READ}"
        )
    finally:
        client.close()
        pool.disconnect()


class _NoBackoff:
    def reset(self) -> None:
        pass

    def compute(self, failures: int) -> float:
        return 0


def test_a_readonly_answer_is_told_apart(redis_server):
    """READONLY from a command comes as ReadOnlyError; from a script, Redis 6.2 wraps it in the
    script's error, which redis-py reads as a plain ResponseError (store/redis_internals.refusal)."""
    plain = Connection(port=redis_server.port)
    try:
        plain.send_command("EVAL", READONLY, 0)
        with pytest.raises(ReadOnlyError):
            plain.read_response()
        plain.send_command("EVAL", "return redis.error_reply('ERR Error running script: -READONLY x')", 0)
        with pytest.raises(ResponseError) as wrapped:
            plain.read_response()
        assert type(wrapped.value) is ResponseError, f"redis-py reads a wrapped READONLY differently: {RE_READ}"
    finally:
        plain.disconnect()


def test_a_connection_answered_readonly_closes_itself(redis_server):
    client = connect(redis_server.url, retries=0)
    try:
        first = client.client_id()
        with pytest.raises(ConnectionError):
            client.eval(READONLY, 0)
        assert client.client_id() != first, f"redis-py's Connection.read_response or disconnect changed: {RE_READ}"
    finally:
        client.close()


def test_the_methods_called_keep_their_signatures():
    expected = {
        Connection.send_packed_command: ["self", "command", "check_health"],
        Connection.read_response: ["self", "disable_decoding"],
        Retry.call_with_retry: ["self", "do", "fail"],
    }
    for method, names in expected.items():
        found = list(inspect.signature(method).parameters)
        assert found[: len(names)] == names, f"redis-py changed {method.__qualname__}{found}: {RE_READ}"
    assert Redis(connection_pool=BlockingConnectionPool()).connection is None, (
        f"redis-py's pooled client no longer has connection None: {RE_READ}"
    )


@pytest.fixture
def sentinel_target(redis_server, workdir) -> Iterator[RedisTarget]:
    sentinel = SentinelServer(workdir / f"contract-sentinel-{uuid.uuid4().hex[:6]}", redis_server.port).start()
    yield RedisTarget("redis://localhost/0", (("127.0.0.1", sentinel.port),), "mymaster")
    sentinel.stop()


def test_a_sentinel_pool_holds_its_maximum_and_queues_past_it(sentinel_target):
    client = connect(sentinel_target, max_connections=2, queue_timeout=0.2)
    pool = client.connection_pool
    assert type(pool) is BlockingSentinelPool, (
        f"redis-py's Sentinel.master_for no longer builds the connection_pool_class given: {RE_READ}"
    )
    assert client.ping()
    taken = [pool.get_connection(), pool.get_connection()]
    with pytest.raises(ConnectionError):
        pool.get_connection()  # past the maximum: queued, then refused
    pool.release(taken[-1])
    pool.release(taken.pop())  # released twice: no second slot freed
    taken.append(pool.get_connection())
    with pytest.raises(ConnectionError):
        pool.get_connection()
    pool.reset()  # as in a forked child: every connection forgotten
    for connection in taken:
        pool.release(connection)  # handed out before the reset: ignored
    assert client.ping() and client.ping()
    client.close()


def test_a_sentinel_pool_frees_the_slot_of_a_connection_that_could_not_connect(workdir):
    """redis-py's get_connection releases a connection it failed to connect before it raises."""
    sentinel = SentinelServer(workdir / f"contract-sentinel-{uuid.uuid4().hex[:6]}", free_port()).start()
    try:
        target = RedisTarget("redis://localhost/0", (("127.0.0.1", sentinel.port),), "mymaster")
        client = connect(target, max_connections=1, queue_timeout=0.2, retries=0)
        for _ in range(3):  # nothing listens where the primary is said to be
            with pytest.raises(ConnectionError) as refused:
                client.connection_pool.get_connection()
            assert "No connection available" not in str(refused.value), (
                f"a connection that could not connect kept its slot: {RE_READ}"
            )
        client.close()
    finally:
        sentinel.stop()


def test_a_sentinels_lookups_go_through_the_bounded_pool(sentinel_target, redis_server):
    client = connect(sentinel_target)
    sentinel = client.connection_pool.sentinel_manager
    pools = [c.connection_pool for c in sentinel.sentinels]
    assert all(type(p) is BlockingConnectionPool and p.max_connections == 2 for p in pools), (
        f"redis-py's Sentinel no longer keeps its clients of the Sentinels in `sentinels`: {RE_READ}"
    )
    assert sentinel.discover_master("mymaster") == ("127.0.0.1", redis_server.port)
    assert len(pools[0]._connections) == 1, (
        f"redis-py's Sentinel no longer asks the Sentinels through the clients in `sentinels`: {RE_READ}"
    )
    client.close()
