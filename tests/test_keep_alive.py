"""Idle keep-alive connections (receiver/web_worker.py): web keeps them open longer than the
clients' pools do.

A sender such as httpx reuses a pooled connection idle up to its pool's expiry. Were web to
close an idle connection first, a request sent on it just as web timed it out would never be
read: the sender sees the connection close and, like Plivo, does not resend the callback (it
retries on timeouts only).
"""
import signal
import socket
import time

import httpx
import psutil

from local.processes import wait_for
from tests.support.services import start_web
from tests.support.raw_http import exchange

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_an_idle_connection_outlives_the_pool_expiry_of_an_httpx_sender(web):
    idle = httpx.Limits().keepalive_expiry + 1.5   # how long httpx, a common sender, keeps a pooled connection
    with connect(web.url) as sock:
        assert exchange(sock, HEALTH).startswith(b"HTTP/1.1 200")
        time.sleep(idle)   # the idle time under test, not a wait for something to happen
        second = exchange(sock, HEALTH)
    assert second.startswith(b"HTTP/1.1 200"), second


def test_web_closes_a_connection_idle_for_WEB_KEEPALIVE_seconds(base_env, workdir):
    server = start_web(base_env, workdir, "web-keepalive", WEB_KEEPALIVE="1")
    try:
        with connect(server.url) as sock:
            assert exchange(sock, HEALTH).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            sock.settimeout(15)
            assert sock.recv(1) == b""   # the server's close, once the connection has idled its second
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
            for sock in (one, other):   # answered: each connection now waits for its next request
                assert exchange(sock, HEALTH).startswith(b"HTTP/1.1 200")
            for _ in range(1100):   # never asked anything: each waits for its first request
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


def test_idle_connections_are_kept_only_briefly_while_the_worker_runs_short_of_connections(base_env, workdir):
    """With 120 s of keep-alive, idle connections could fill a worker's pool (gevent then stops
    accepting, and Plivo's connection attempts fail). Past 95 % of its connections, a
    connection waits only BUSY_KEEPALIVE (5 s) for its next request."""
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
