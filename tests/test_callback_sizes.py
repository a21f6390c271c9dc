"""Callbacks of every size the contract allows arrive: a GET callback's fields ride in its
request line (a bulk message's uuid list is easily 40 KB), a POST's in its body, each up to
MAX_BODY_BYTES; anything larger is a JSON 413 or 414 from Answerback, with a log line naming
the size. Real gunicorn, the session's web, worker and sandbox."""

from __future__ import annotations

import http.client
import json
import socket
import uuid
from urllib.parse import urlencode, urlsplit

import pytest

from local.processes import wait_for
from tests.support.api import submit, wait_status
from tests.support.signed_callbacks import signed_headers

MAX_BODY_BYTES = 64 * 1024  # web's default


def uuids(total_bytes: int, each: int = len("&message_uuid=") + 36) -> list[str]:
    """Enough message uuids to fill about `total_bytes` of a query string or form body (or of a
    JSON body, `each` = JSON_EACH)."""
    return [str(uuid.uuid4()) for _ in range(total_bytes // each)]


JSON_EACH = len('"", ') + 36


@pytest.fixture
def pending(api, worker, sandbox):
    sandbox.faults(drop_callback={"rate": 1.0})  # each test delivers the callback itself
    yield lambda: wait_status(api, submit(api, "POST", "Message/", {"src": "1", "dst": "2"})["request_id"], "pending")
    sandbox.faults(drop_callback={"rate": 0.0})


def in_log(web, text: str) -> None:
    wait_for(lambda: text in web.service.log_path.read_text(), 5, 0.05, f"{text!r} in web's log")


@pytest.mark.parametrize("size", [5_000, 40_000, MAX_BODY_BYTES - 512])
def test_a_get_callback_with_a_long_query_string_is_stored(api, web, pending, size):
    record = pending()
    fields = {"api_id": record["api_id"], "message_uuid": uuids(size)}
    path = f"/callbacks/plivo?rid={record['request_id']}"
    with web.client(key=None) as client:
        answer = client.get(
            path + "&" + urlencode(fields, doseq=True), headers=signed_headers("GET", web.url + path, fields)
        )
    assert answer.status_code == 200 and answer.json() == {"outcome": "matched"}, answer.text[:300]
    done = api.get(f"/v1/requests/{record['request_id']}").json()
    assert done["status"] == "completed" and done["response"]["message_uuid"] == fields["message_uuid"]


def refused(api_b) -> tuple[int, int]:
    """Oversized callbacks counted (the metric), and callbacks refused this hour in the figures
    over time of all tenants (KEY_B is an admin key)."""
    figures = api_b.get("/v1/series", params={"window": "hour", "scope": "all"}).json()["series"]
    counters = {
        line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
        for line in metric_lines(api_b, "answerback_callbacks_rejected")
    }
    return int(counters.get('reason="oversized"', 0)), sum(figures["callbacks_refused"])


def metric_lines(client, name: str) -> list[str]:
    return [line for line in client.get("/metrics").text.splitlines() if line.startswith(name + "_total{")]


def test_a_get_callback_past_max_body_bytes_is_a_json_414_logged_with_its_size(web, api_b):
    before = refused(api_b)
    fields = {"api_id": str(uuid.uuid4()), "message_uuid": uuids(MAX_BODY_BYTES + 4096)}
    query = urlencode(fields, doseq=True)
    status, kind, answer = raw_get(web.url, "/callbacks/plivo?" + query)  # httpx sends no URL this long
    assert status == 414 and kind == "application/json" and str(MAX_BODY_BYTES) in answer["error"]
    in_log(web, f"callback query string of {len(query)} bytes refused")
    assert refused(api_b) == (before[0] + 1, before[1] + 1)  # counted among the refused, in the charts too


def raw_get(base_url: str, target: str) -> tuple[int, str, dict]:
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("form", [False, True])
def test_a_post_callback_up_to_max_body_bytes_is_stored_as_json_or_form(api, web, pending, form):
    record = pending()
    fields = {"api_id": record["api_id"], "message_uuid": uuids(MAX_BODY_BYTES - 2048, 50 if form else JSON_EACH)}
    path = f"/callbacks/plivo?rid={record['request_id']}"
    if form:
        body = urlencode(fields, doseq=True)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            **signed_headers("POST", web.url + path, {k: v if isinstance(v, list) else [v] for k, v in fields.items()}),
        }
    else:
        body = json.dumps(fields)
        headers = {"Content-Type": "application/json", **signed_headers("POST", web.url + path, fields)}
    assert MAX_BODY_BYTES - 4096 < len(body) <= MAX_BODY_BYTES
    with web.client(key=None) as client:
        answer = client.post(path, content=body, headers=headers)
    assert answer.status_code == 200 and answer.json() == {"outcome": "matched"}, answer.text[:300]
    done = api.get(f"/v1/requests/{record['request_id']}").json()
    assert done["response"]["message_uuid"] == fields["message_uuid"]


def test_a_post_callback_past_max_body_bytes_is_a_json_413_logged_with_its_size(web, api_b):
    before = refused(api_b)
    body = json.dumps({"api_id": str(uuid.uuid4()), "message_uuid": uuids(MAX_BODY_BYTES + 4096, JSON_EACH)})
    with web.client(key=None) as client:
        answer = client.post("/callbacks/plivo", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and str(MAX_BODY_BYTES) in answer.json()["error"]
    in_log(web, f"request body of {len(body)} bytes refused")
    assert refused(api_b) == (before[0] + 1, before[1] + 1)


def test_headers_a_proxy_adds_fit(api, web, pending):
    """Load balancers pass header lines up to 16 KiB (a long cookie, a trace context, a chain
    of X-Forwarded-For): gunicorn's default 8190 would refuse the callback."""
    record = pending()
    body = {"api_id": record["api_id"], "status": "delivered"}
    path = f"/callbacks/plivo?rid={record['request_id']}"
    extra = {
        "Cookie": "lb=" + "x" * 12_000,
        "X-Forwarded-For": ", ".join(["10.0.0.1"] * 600),
        **{f"X-Trace-{n}": "t" * 100 for n in range(120)},
    }
    with web.client(key=None) as client:
        answer = client.post(
            path,
            content=json.dumps(body),
            headers={"Content-Type": "application/json", **extra, **signed_headers("POST", web.url + path, body)},
        )
    assert answer.status_code == 200 and answer.json() == {"outcome": "matched"}, answer.text[:300]


def raw_answer(base_url: str, request: bytes) -> tuple[int, str, dict]:
    """Send `request` as it is (the server may answer and close before it has all of it) and
    read the whole answer."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        try:
            sock.sendall(request)
        except OSError:  # refused before the end: the answer is there to read
            pass
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), json.loads(body)


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /callbacks/plivo?" + b"x=1&" * 300_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\nCookie: " + b"c" * 20_000 + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(300)) + b"\r\n", 400),
        (b"BAD REQUEST\r\n\r\n", 400),
    ],
)
def test_what_gunicorn_refuses_before_the_app_is_answered_in_json(web, request_bytes, status):
    """A request line past gunicorn's parser's 1 MiB, a header line or header count past the
    limits, a malformed request line: JSON like every other answer, not gunicorn's HTML page."""
    got, kind, answer = raw_answer(web.url, request_bytes)
    assert (got, kind) == (status, "application/json") and answer["error"]
