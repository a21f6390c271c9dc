"""Idle keep-alive connections (receiver/web_worker.py): web keeps them open longer than the
clients' pools do.

A sender such as httpx reuses a pooled connection idle up to its pool's expiry. Were web to
close an idle connection first, a request sent on it just as web timed it out would never be
read: the sender sees the connection close and, like Plivo, does not resend the callback (it
retries on timeouts only).
"""

import select
import signal
import socket
import time
import uuid

import httpx
import psutil

from config import raise_fd_limit
from local.processes import wait_for
from receiver.web_worker import BUSY_KEEPALIVE
from tests.support.api import submit
from tests.support.raw_http import exchange
from tests.support.services import KEY_A, KEY_B, held, start_web, web_worker
from tests.support.signed_callbacks import callback

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def readable(sock: socket.socket) -> bool:
    """Whether an answer (or the server's close) is there to read now."""
    return bool(select.select([sock], [], [], 0)[0])


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_an_idle_connection_outlives_the_pool_expiry_of_an_httpx_sender(web):
    idle = httpx.Limits().keepalive_expiry + 1.5  # how long httpx, a common sender, keeps a pooled connection
    with connect(web.url) as sock:
        assert exchange(sock, HEALTH).startswith(b"HTTP/1.1 200")
        time.sleep(idle)  # the idle time under test, not a wait for something to happen
        second = exchange(sock, HEALTH)
    assert second.startswith(b"HTTP/1.1 200"), second


def test_web_closes_a_connection_idle_for_WEB_KEEPALIVE_seconds(base_env, workdir):
    server = start_web(base_env, workdir, "web-keepalive", WEB_KEEPALIVE="1")
    try:
        with connect(server.url) as sock:
            assert exchange(sock, HEALTH).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            sock.settimeout(15)
            assert sock.recv(1) == b""  # the server's close, once the connection has idled its second
            closed_after = time.monotonic() - started
    finally:
        server.service.stop()
    assert 0.5 <= closed_after < 10, closed_after


def test_sigterm_closes_idle_connections_at_once(base_env, workdir):
    """gunicorn's own worker stops only when its connections are gone, so an idle keep-alive
    connection would hold a stopping web for the whole graceful_timeout. 1,100 of them, so
    that their descriptors in web pass 1,024 (where select() stops)."""
    server = start_web(base_env, workdir, "web-stopping", WEB_CONCURRENCY="1")
    worker = psutil.Process(server.service.pid).children()[0]
    crowd: list[socket.socket] = []
    try:
        with connect(server.url) as one, connect(server.url) as other:
            for sock in (one, other):  # answered: each connection now waits for its next request
                assert exchange(sock, HEALTH).startswith(b"HTTP/1.1 200")
            for _ in range(1100):  # never asked anything: each waits for its first request
                crowd.append(connect(server.url))
            wait_for(lambda: len(worker.net_connections("tcp")) >= 1100, 30, message="web to take the crowd")
            started = time.monotonic()
            server.service.signal(signal.SIGTERM)
            server.service.process.wait(timeout=30)
            stopped_after = time.monotonic() - started
            assert one.recv(1) == b"" and other.recv(1) == b""
    finally:
        for sock in crowd:
            sock.close()
        server.service.stop()
    assert stopped_after < 10, stopped_after


def unread_by_web(web_port: int, client: socket.socket) -> int | None:
    """Bytes the kernel still holds for web on the connection from `client` (/proc/net/tcp's
    rx_queue of web's end), or None if no such connection is listed."""
    client_port = client.getsockname()[1]
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
            if (local, remote) == (web_port, client_port):
                return int(fields[4].split(":")[1], 16)
    return None


def test_sigterm_serves_a_request_that_has_started_arriving(base_env, workdir):
    """A sender that has begun sending its callback on a kept-alive connection when web stops
    gets its answer: the first bytes are already in gunicorn's parser (none left on the
    socket), yet the connection is not closed as an idle one."""
    server = start_web(base_env, workdir, "web-arriving", WEB_CONCURRENCY="1")
    port = int(server.url.rsplit(":", 1)[1])
    request = a_callback(server.url)
    try:
        with connect(server.url) as sending, connect(server.url) as idle:
            for sock in (sending, idle):  # answered in this order: each now waits for its next request
                assert exchange(sock, HEALTH).startswith(b"HTTP/1.1 200")
            sending.sendall(request[:40])  # a part of the request line and headers
            wait_for(lambda: unread_by_web(port, sending) == 0, 10, message="web to read the first bytes")
            server.service.signal(signal.SIGTERM)
            idle.settimeout(10)
            assert idle.recv(1) == b""  # web has ended the idle waits (sending's was looked at first)
            answer = exchange(sending, request[40:])
        assert answer.startswith(b"HTTP/1.1 200"), "the connection was closed with its request half arrived"
        assert b"Connection: close" in answer
        server.service.process.wait(timeout=30)
    finally:
        server.service.stop()


def test_idle_connections_are_kept_only_briefly_while_the_worker_runs_short_of_connections(base_env, workdir):
    """With 120 s of keep-alive, idle connections could fill a worker's pool (gevent then stops
    accepting, and Plivo's connection attempts fail). Past 95 % of its connections, with no
    idle client-API connection to close nor waiter to answer early, a connection waits only
    BUSY_KEEPALIVE (5 s) for its next request."""
    server = start_web(base_env, workdir, "web-crowded", WEB_CONCURRENCY="1", MAX_WAITERS="0")  # 1,000 connections
    worker = psutil.Process(server.service.pid).children()[0]
    crowd: list[socket.socket] = []
    try:
        for _ in range(960):
            crowd.append(connect(server.url))
        wait_for(lambda: len(worker.net_connections("tcp")) >= 960, 30, message="web to take the crowd")
        with connect(server.url) as sock:
            assert exchange(sock, HEALTH).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            sock.settimeout(60)
            assert sock.recv(1) == b""
            closed_after = time.monotonic() - started
    finally:
        for sock in crowd:
            sock.close()
        server.service.stop()
    assert 3 < closed_after < 20, closed_after


def request_of(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": len(body)}.items())
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode() + body


def a_callback(url: str) -> bytes:
    """One signed callback for an unknown api_id (stored as early): what a sender sends."""
    return request_of(*callback(url, None, str(uuid.uuid4())))


def test_a_senders_idle_connection_is_kept_while_idle_clients_and_waiters_make_room(make_stack):
    """With 10,000 waiters a process is short of connections without being short of anything a
    sender needs: the keep-alive of a connection that carries callbacks is not shortened while
    there are idle client-API connections to close and waiters to answer early (the waiters
    of the tenant holding the most first)."""
    raise_fd_limit()
    stack = make_stack(
        db=12,
        workers=0,
        WEB_CONCURRENCY="1",
        MAX_WAITERS="100",  # 1,100 connections
        MAX_WAITERS_PER_TENANT="80",
    )
    with stack.web.client(KEY_A) as api_a, stack.web.client(KEY_B) as api_b:
        rids = [(KEY_A, submit(api_a)["request_id"]) for _ in range(80)] + [
            (KEY_B, submit(api_b)["request_id"]) for _ in range(20)
        ]
    worker = web_worker(stack)
    waiters: list[tuple[str, socket.socket]] = []
    idle_clients: list[socket.socket] = []
    crowd: list[socket.socket] = []
    try:
        for key, rid in rids:
            sock = connect(stack.web.url)
            sock.sendall(
                f"GET /v1/requests/{rid}?wait=60 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
            )
            waiters.append((key, sock))
        wait_for(lambda: held(stack) == 100, 30, message="every waiter to be held")
        for _ in range(20):  # client-API keep-alives: answered, now idle
            idle_clients.append(connect(stack.web.url))
            assert exchange(idle_clients[-1], HEALTH).startswith(b"HTTP/1.1 200")
        for _ in range(960):  # never asked anything (they may be a sender's first connection)
            crowd.append(connect(stack.web.url))
        wait_for(lambda: len(worker.net_connections("tcp")) >= 1080, 30, message="web to take the crowd")
        with connect(stack.web.url) as sender:
            assert exchange(sender, a_callback(stack.web.url)).startswith(b"HTTP/1.1 200")
            time.sleep(BUSY_KEEPALIVE + 3)  # the idle time under test, not a wait for something to happen
            second = exchange(sender, a_callback(stack.web.url))
        assert second.startswith(b"HTTP/1.1 200"), "the sender's idle connection was closed under it"
        for sock in idle_clients:
            sock.settimeout(10)
            assert sock.recv(1) == b""  # closed first: a client of the API reconnects at no cost
        shed = [(key, exchange(sock, b"")) for key, sock in waiters if readable(sock)]
        assert shed, "no waiter was answered early"
        assert {key for key, _ in shed} == {KEY_A}  # the tenant holding the most waiters
        for _, head in shed:
            assert head.startswith(b"HTTP/1.1 200") and b"X-Wait-Capped: true" in head and b"Connection: close" in head
    finally:
        for sock in [s for _, s in waiters] + idle_clients + crowd:
            sock.close()
