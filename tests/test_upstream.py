"""The worker's upstream client: proxies from the environment, for real."""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from tests.support.api import submit, wait_status

pytestmark = pytest.mark.slow


class ForwardProxy(BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy: takes absolute-URI requests, forwards them, records them."""

    seen: ClassVar[list[str]] = []

    def _forward(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "proxy-connection", "connection")}
        with httpx.Client(trust_env=False) as client:
            answer = client.request(self.command, self.path, headers=headers, content=body)
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in ("transfer-encoding", "connection", "content-encoding", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def proxy():
    ForwardProxy.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ForwardProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", ForwardProxy.seen
    server.shutdown()
    server.server_close()


def test_upstream_requests_go_through_http_proxy(make_stack, sandbox, proxy):
    url, seen = proxy
    stack = make_stack(db=8, HTTP_PROXY=url, NO_PROXY="")
    with stack.web.client() as api:
        done = wait_status(api, submit(api)["request_id"], "completed")
    assert done["response"]["message"] == "call fired"
    assert len(seen) == 1 and seen[0].startswith(f"POST {sandbox.api_url}Account/")


def test_no_proxy_bypasses_the_proxy(make_stack, sandbox, proxy):
    url, seen = proxy
    stack = make_stack(db=8, HTTP_PROXY=url, NO_PROXY="127.0.0.1")
    with stack.web.client() as api:
        wait_status(api, submit(api)["request_id"], "completed")
    assert seen == []


def test_query_strings_are_written_as_before_the_client_changed():
    """httpx wrote GET/DELETE params this way; the upstream must see the same query."""
    from workers.upstream import query

    assert query({"a": True, "b": False, "c": None, "d": [1, "x y"], "e": 1.5}) == "a=true&b=false&c=&d=1&d=x+y&e=1.5"


def test_no_proxy_covers_the_upstream_host(monkeypatch):
    from workers.upstream import environment_proxy

    for name in ("https_proxy", "no_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    monkeypatch.setenv("NO_PROXY", "")
    assert environment_proxy("https://api.plivo.com/v1/") == "http://proxy.local:3128"
    monkeypatch.setenv("NO_PROXY", ".plivo.com")
    assert environment_proxy("https://api.plivo.com/v1/") is None


class Upstream:
    """A raw HTTP/1.1 server that notes each request as (connection number, request line) and
    answers `{"api_id": ...}` as Plivo does, except that the requests numbered in `reset`
    (1, 2, ... over all connections) are read whole and then answered with a TCP reset."""

    def __init__(self, reset: set[int] = frozenset()) -> None:
        self.reset, self.seen, self.connections = set(reset), [], 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1/"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                self.seen.append((number, head.split(b"\r\n")[0].decode()))
                if len(self.seen) in self.reset:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                body = json.dumps({"message": "async api spawned", "api_id": str(uuid.uuid4())}).encode()
                conn.sendall(
                    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )

    def close(self) -> None:
        self.listener.close()


def client_for(upstream: Upstream, **settings):
    from config import Settings
    from workers.upstream import PlivoClient

    return PlivoClient(
        Settings(plivo_api_url=upstream.url, plivo_auth_id="MA1", plivo_auth_token="token", plivo_timeout=5, **settings)
    )


def claimed(method: str = "POST", path: str = "Call/"):
    from store.outbox import Claimed

    return Claimed(str(uuid.uuid4()), method, path, {"to": "1555"}, "POST", 1, 60, "api")


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_a_reused_connection_reset_after_the_request_left_never_sends_a_post_twice(method):
    """libcurl sends a request again by itself when a reused connection dies before any answer:
    for a POST that may have acted upstream, that must not happen (it stays `unknown`); an
    idempotent DELETE may go again, on a fresh connection."""
    upstream = Upstream(reset={2})
    client = client_for(upstream)
    try:
        first = client.send(claimed(method), "http://127.0.0.1:1/cb")
        second = client.send(claimed(method), "http://127.0.0.1:1/cb")
    finally:
        client.close()
        upstream.close()
    assert first.kind == "accepted"
    if method == "POST":
        assert second.kind == "unknown" and second.error["exception"] == "SEND_FAIL_REWIND"
        assert [number for number, _ in upstream.seen] == [1, 1]  # sent once, on the reused connection
    else:
        assert second.kind == "accepted"
        assert [number for number, _ in upstream.seen] == [1, 1, 2]
        assert all(line.startswith("DELETE /v1/Account/MA1/Call/?") for _, line in upstream.seen)


def test_an_idle_connection_is_retired_before_the_upstream_would_close_it(monkeypatch):
    """A connection idle IDLE_CONNECTION_S is not used again, so a send cannot cross an
    upstream closing it as idle; a busy connection is kept."""
    import workers.upstream

    monkeypatch.setattr(workers.upstream, "IDLE_CONNECTION_S", 2)
    upstream = Upstream()
    client = client_for(upstream)
    try:
        for pause in (0, 0, 3, 0):  # back-to-back sends may stall up to 2 s on a busy machine
            time.sleep(pause)  # the idle time is what is tested
            assert client.send(claimed(), "http://127.0.0.1:1/cb").kind == "accepted"
    finally:
        client.close()
        upstream.close()
    assert [number for number, _ in upstream.seen] == [1, 1, 2, 2]


def test_a_refused_connection_is_safe_to_retry_and_a_silent_upstream_is_not():
    from config import Settings
    from workers.upstream import PlivoClient

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
    refused = PlivoClient(
        Settings(
            plivo_api_url=f"http://127.0.0.1:{closed.getsockname()[1]}/v1/",
            plivo_auth_id="MA1",
            plivo_auth_token="t",
            plivo_timeout=5,
        )
    )
    silent = PlivoClient(
        Settings(
            plivo_api_url=f"http://127.0.0.1:{port}/v1/", plivo_auth_id="MA1", plivo_auth_token="t", plivo_timeout=0.5
        )
    )
    try:
        verdict = refused.send(claimed(), "http://127.0.0.1:1/cb")
        assert verdict.kind == "retry" and verdict.error["exception"] == "COULDNT_CONNECT"
        verdict = silent.send(claimed(), "http://127.0.0.1:1/cb")  # accepted by the kernel, never answered
        assert verdict.kind == "unknown" and verdict.error["exception"] == "OPERATION_TIMEDOUT"
        assert silent.send(claimed("GET"), "http://127.0.0.1:1/cb").kind == "retry"
    finally:
        refused.close()
        silent.close()
        listener.close()
        closed.close()


def test_an_upstream_whose_certificate_does_not_verify_gets_nothing_and_is_safe_to_retry():
    """TLS is verified (against certifi's authorities): a certificate of an unknown authority
    ends the send before anything of the request left, so it may be sent again."""
    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                received.append(tls.recv(65536))
        except (OSError, ssl.SSLError):
            pass  # the client gives up during the handshake

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    verdict = sent_once(f"https://127.0.0.1:{listener.getsockname()[1]}/v1/", thread, listener)
    assert verdict.kind == "retry" and verdict.error["exception"] == "PEER_FAILED_VERIFICATION"
    assert b"".join(received) == b""  # no byte of the request (TLS 1.3: the server may finish its handshake first)


def test_sends_from_one_thread_after_another_reuse_the_warmest_connection():
    """A send takes the handle used last, whichever send thread runs it: the process's send
    threads take turns (oldest waiter first), so with a handle per thread a moderate rate
    spread over them left every connection idle past IDLE_CONNECTION_S, and each send paid
    a new TCP and TLS handshake."""
    upstream = Upstream()
    client = client_for(upstream)
    verdicts: list = []
    try:
        for _ in range(4):
            thread = threading.Thread(target=lambda: verdicts.append(client.send(claimed(), "http://127.0.0.1:1/cb")))
            thread.start()
            thread.join(10)
    finally:
        client.close()
        upstream.close()
    assert [verdict.kind for verdict in verdicts] == ["accepted"] * 4
    assert [number for number, _ in upstream.seen] == [1, 1, 1, 1]


def test_concurrent_sends_never_share_a_handle():
    upstream = Upstream()
    client = client_for(upstream)
    try:
        with ThreadPoolExecutor(8) as pool:
            verdicts = list(pool.map(lambda _: client.send(claimed(), "http://127.0.0.1:1/cb"), range(64)))
    finally:
        client.close()
        upstream.close()
    assert [verdict.kind for verdict in verdicts] == ["accepted"] * 64
    assert len(upstream.seen) == 64 and upstream.connections <= 8


def test_a_proxy_that_refuses_the_tunnel_leaves_the_send_safe_to_retry(monkeypatch):
    """An HTTPS upstream goes through the proxy's CONNECT tunnel; a refused tunnel (502) sent
    nothing of the request upstream, whatever libcurl counted for the CONNECT itself. The
    proxy's credentials are used, and not written into the verdict's error."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def refuse() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            seen.append(data)
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://agent:proxy-secret@127.0.0.1:{listener.getsockname()[1]}")
    verdict = sent_once("https://api.plivo.example/v1/", thread, listener)
    [connect] = seen
    assert connect.startswith(b"CONNECT api.plivo.example:443 HTTP/1.1\r\n")
    assert b"Proxy-Authorization: Basic " + base64.b64encode(b"agent:proxy-secret") in connect
    assert "proxy-secret" not in json.dumps(verdict.error)
    assert verdict.kind == "retry" and verdict.error["exception"] == "COULDNT_CONNECT"


def sent_once(api_url: str, server: threading.Thread, listener: socket.socket):
    """One POST from a client of its own to `api_url`; then `server` is joined, `listener` closed."""
    from config import Settings
    from workers.upstream import PlivoClient

    client = PlivoClient(Settings(plivo_api_url=api_url, plivo_auth_id="MA1", plivo_auth_token="t", plivo_timeout=5))
    try:
        return client.send(claimed(), "http://127.0.0.1:1/cb")
    finally:
        client.close()
        server.join(10)
        listener.close()
