"""The worker's upstream client: proxies from the environment, for real."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.conftest import submit, wait_status

pytestmark = pytest.mark.slow


class ForwardProxy(BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy: takes absolute-URI requests, forwards them, records them."""
    seen: list[str] = []

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
