"""Bugs the fuzz properties found, pinned by the input that found each; a strict xfail
marks one still open. Each test starts from the fuzz apps' seed state (`seeded`)."""

from __future__ import annotations

import json
import socket
import uuid

import pytest

from tests.support.fuzz_state import submit_via
from tests.support.fuzz_strategies import KEY, OTHER_KEY, bearer
from tests.support.raw_http import MAX_HEAD, AnswerTooLarge, exchange

DEEP = 5000


@pytest.mark.parametrize(
    "app, path, headers",
    [
        ("signed", "/v1/requests", bearer(KEY)),
        ("signed", "/callbacks/plivo", {}),
        ("unsigned", "/callbacks/plivo", {}),
    ],
)
def test_deeply_nested_json_is_a_400(seeded, app, path, headers):
    """Was: RecursionError out of get_json (only ValueError was caught), a 500."""
    body = b"[" * DEEP + b"]" * DEEP
    answer = seeded.client(app).post(path, data=body, headers=headers | {"Content-Type": "application/json"})
    assert answer.status_code == 400, (answer.status_code, answer.get_data())


@pytest.mark.parametrize(
    "suffix, path",
    [
        (":deliveries", "/v1/requests/{}"),
        (":digests", "/v1/requests/{}"),
        (":deliveries", "/v1/requests/{}/deliveries"),
        (":deliveries", "/v1/results/{}"),
    ],
)
def test_request_id_naming_another_key_is_a_404(seeded, suffix, path):
    """Was: `{rid}:deliveries` named that request's list key; HGETALL on it failed WRONGTYPE, a 503."""
    rid = seeded.pools.own[0]  # has two deliveries, so ab:req:{rid}:deliveries exists
    answer = seeded.client("signed").get(path.format(rid + suffix), headers=bearer(KEY))
    assert answer.status_code == 404, (answer.status_code, answer.get_data())


def test_callback_rid_naming_another_key_is_stored_by_api_id(seeded):
    """Was: match_callback.lua took any existing key ab:req:{rid} for a request; with
    rid={real}:deliveries it failed WRONGTYPE half-way: a 503, and stray keys written."""
    rid = seeded.pools.own[0]
    before = set(seeded.db.snapshot())
    answer = seeded.client("unsigned").post(
        f"/callbacks/plivo?rid={rid}:deliveries", json={"api_id": str(uuid.uuid4())}
    )
    stray = {k for k in set(seeded.db.snapshot()) - before if b":deliveries:" in k or b":digests:" in k}
    assert answer.status_code == 200 and answer.json == {"outcome": "early"}, (answer.status_code, answer.get_data())
    assert not stray


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"])
def test_submission_with_a_non_finite_number_is_a_400(seeded, value):
    """Was: a 202, then the worker's httpx json= refused the value (ValueError in the
    drain job), so the request never left and ended `expired`."""
    answer = seeded.client("signed").post(
        "/v1/requests",
        data=b'{"method": "POST", "path": "Call/", "params": {"x": %s}}' % value,
        headers=bearer(OTHER_KEY) | {"Content-Type": "application/json"},
    )
    assert answer.status_code == 400, (answer.status_code, answer.get_data()[:200])


@pytest.mark.parametrize("value", [b"NaN", b"1e999"])
def test_a_callback_with_a_non_finite_number_leaves_records_valid_json(seeded, value):
    """Refused (400), or stored so that the record still reads back as JSON (was/is:
    `"response": {..., "n": Infinity}`, which no JSON parser takes)."""
    client = seeded.client("unsigned")
    rid = submit_via(client, OTHER_KEY)
    answer = client.post(
        f"/callbacks/plivo?rid={rid}",
        headers={"Content-Type": "application/json"},
        data=b'{"api_id": "%s", "n": %s}' % (str(uuid.uuid4()).encode(), value),
    )
    if answer.status_code == 400:
        return
    assert answer.status_code == 200, answer.get_data()
    text = client.get(f"/v1/requests/{rid}", headers=bearer(OTHER_KEY)).get_data(as_text=True)
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the record: {text[-120:]}"))


@pytest.mark.parametrize("query", ["limit=\u0665", "offset=\uff11", "limit=\u0661\u0665"])
def test_non_ascii_digits_are_a_400(seeded, query):
    """Was: `\\d` matched any Unicode digit, so limit=\u0665 (ARABIC-INDIC FIVE) was taken as 5."""
    answer = seeded.client("signed").get("/v1/requests?" + query, headers=bearer(KEY))
    assert answer.status_code == 400, (answer.status_code, answer.get_data()[:200])


def test_boolean_callback_timeout_is_a_400(seeded):
    """Was: `"callback_timeout": true` coerced to a 1-second timeout (pydantic's lax int)."""
    answer = seeded.client("signed").post(
        "/v1/requests", json={"method": "POST", "path": "Call/", "callback_timeout": True}, headers=bearer(OTHER_KEY)
    )
    assert answer.status_code == 400, (answer.status_code, answer.get_data()[:200])


@pytest.mark.parametrize(
    "api_id",
    [
        "\u0660" * 32,
        "{6f1c2a34-5b6d-4e7f-8a9b-0c1d2e3f4a5b}",
        "urn:uuid:6f1c2a34-5b6d-4e7f-8a9b-0c1d2e3f4a5b",
        "6f1c2a345b6d4e7f8a9b0c1d2e3f4a5b",
    ],
)
def test_callback_api_id_must_be_a_canonical_uuid(seeded, api_id):
    """Was: checked with uuid.UUID(), which takes braces, 'urn:uuid:', no hyphens and any
    Unicode digits: kept as an orphan under a key no registered api_id can ever match."""
    answer = seeded.client("unsigned").post("/callbacks/plivo", json={"api_id": api_id})
    assert answer.status_code == 400, (answer.status_code, answer.get_data())


@pytest.mark.parametrize(
    "request_line, headers, size",
    [
        (b"POST /nope", b"", 100_000),  # 404
        (b"GET /healthz", b"", 100_000),  # 200
        (b"POST /v1/requests", b"Authorization: Bearer wrong\r\n", 100_000),  # 401
        # past the 1 MiB the app discards: gthread workers then left the connection dead while the
        # answer said keep-alive; gunicorn's gevent worker drains the rest of the body itself
        (b"POST /v1/requests", b"Authorization: Bearer wrong\r\n", 2_000_000),
        # the webhook, answered before Flask's dispatch (receiver/front.py): 413 as any view
        (b"POST /callbacks/plivo", b"Content-Type: text/plain\r\n", 100_000),
        (b"POST /callbacks/plivo", b"Content-Type: text/plain\r\n", 2_000_000),
        (b"GET /callbacks/plivo?api_id=x", b"", 2_000_000),  # 400, the body never read
    ],
)
def test_keep_alive_survives_an_unread_large_body(web, request_line, headers, size):
    """Was: after answering a request whose body (> 64 KiB) the app had not read, gunicorn 27
    drained at most 64 KiB and closed the connection, though the answer announced keep-alive:
    the next request on it got no answer. Now: answered, or the answer says Connection: close."""
    host, port = web.url.removeprefix("http://").split(":")
    body = b"x" * size
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = exchange(
            sock,
            request_line + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body,
        )
        assert head.startswith(b"HTTP/1.1 ")
        if b"connection: close" in head.lower():
            return  # announced: the client knows to open a new connection
        try:
            second = exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError as exc:
            second = repr(exc).encode()
    assert second.startswith(b"HTTP/1.1 200"), second


def test_the_raw_client_reads_a_bounded_answer():
    """A server that never ends its response head fails the test instead of filling memory."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.settimeout(10)
        theirs.sendall(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * (MAX_HEAD + 10))
        with pytest.raises(AnswerTooLarge):
            exchange(ours, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
