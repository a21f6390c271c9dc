"""The webhook: signatures, body forms, outcomes, and bad input. Signed here
with the official plivo SDK's own signer, so the check is independent."""

from __future__ import annotations

import json
import socket
import uuid
from urllib.parse import urlencode

import pytest

from tests.support.api import SENT_THEN_EXPIRED_S, submit, wait_status, written_keys
from tests.support.raw_http import exchange
from tests.support.services import AUTH_TOKEN
from tests.support.signed_callbacks import sdk_signature, signed_headers


def post_json(web, path_query: str, body: dict, **sign) -> object:
    url = web.url + path_query
    with web.client(key=None) as client:
        return client.post(
            path_query,
            content=json.dumps(body),
            headers={"Content-Type": "application/json", **signed_headers("POST", url, body, **sign)},
        )


def test_signed_json_callback_for_an_unknown_api_id_is_kept_early(web, redis):
    api_id = str(uuid.uuid4())
    answer = post_json(web, "/callbacks/plivo", {"api_id": api_id, "status": "ok"})
    assert answer.status_code == 200 and answer.json() == {"outcome": "early"}
    assert redis.exists(f"ab:orphan:{api_id}")


def test_unsigned_or_wrongly_signed_callback_is_403_and_stores_nothing(web, redis):
    body = {"api_id": str(uuid.uuid4())}
    with web.client(key=None) as client:
        unsigned = client.post("/callbacks/plivo", json=body)
    forged = post_json(web, "/callbacks/plivo", body, token="not-the-token")
    assert unsigned.status_code == forged.status_code == 403
    assert "signature" in forged.json()["error"]
    assert written_keys(redis) == []


def test_signature_over_another_host_is_refused(web):
    body = {"api_id": str(uuid.uuid4())}
    headers = {
        "Content-Type": "application/json",
        **signed_headers("POST", "http://internal.example:8000/callbacks/plivo", body),
    }
    with web.client(key=None) as client:
        assert client.post("/callbacks/plivo", content=json.dumps(body), headers=headers).status_code == 403


def test_form_and_get_callbacks_complete_their_requests(api, web, worker, sandbox):
    sandbox.faults(drop_callback={"rate": 1.0})
    first, second = (wait_status(api, submit(api)["request_id"], "pending") for _ in range(2))
    form = {"api_id": first["api_id"], "status": "fired", "to": ["1", "2"]}
    path = f"/callbacks/plivo?rid={first['request_id']}"
    params = {k: v if isinstance(v, list) else [v] for k, v in form.items()}
    with web.client(key=None) as client:
        answer = client.post(
            path,
            content=urlencode(form, doseq=True),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                **signed_headers("POST", web.url + path, params),
            },
        )
        assert answer.json() == {"outcome": "matched"}
        fields = {"api_id": second["api_id"], "n": "llamada — ✓"}
        path = f"/callbacks/plivo?rid={second['request_id']}"
        # The SDK signs GET fields given as params exactly as when they are in the URL's query
        # (and raises on a non-ASCII query on this Python), so they go in as params here.
        answer = client.get(path + "&" + urlencode(fields), headers=signed_headers("GET", web.url + path, fields))
        assert answer.json() == {"outcome": "matched"}, answer.text
    assert api.get(f"/v1/requests/{first['request_id']}").json()["response"] == form
    done = api.get(f"/v1/requests/{second['request_id']}").json()
    assert done["response"] == {"api_id": second["api_id"], "n": "llamada — ✓"}


def test_late_callback_is_kept_with_late_flag(api, web, worker, sandbox):
    sandbox.faults(drop_callback={"rate": 1.0})
    record = submit(api, callback_timeout=SENT_THEN_EXPIRED_S)
    expired = wait_status(api, record["request_id"], "expired")
    assert expired["error"] == {"reason": "no callback within callback_timeout"}
    body = {"api_id": expired["api_id"], "late": "yes"}
    answer = post_json(web, f"/callbacks/plivo?rid={record['request_id']}", body)
    assert answer.json() == {"outcome": "late"}
    done = api.get(f"/v1/requests/{record['request_id']}").json()
    assert done["status"] == "completed" and done["late"] is True and done["response"] == body


@pytest.mark.parametrize(
    "body, message",
    [
        ({"status": "ok"}, "no api_id"),
        ({"api_id": "not-a-uuid"}, "not a UUID"),
        ({"api_id": 5}, "no api_id"),
    ],
)
def test_callback_without_a_usable_api_id_is_400(web, redis, body, message):
    answer = post_json(web, "/callbacks/plivo", body)
    assert answer.status_code == 400 and message in answer.json()["error"]
    assert written_keys(redis) == []


def test_unparseable_and_oversized_callbacks(web):
    with web.client(key=None) as client:
        bad = client.post("/callbacks/plivo", content=b"{oops", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400
        huge = client.post("/callbacks/plivo", content=b"x" * 70_000, headers={"Content-Type": "application/json"})
        assert huge.status_code == 413 and "error" in huge.json()
        assert client.put("/callbacks/plivo").status_code == 405


def test_replayed_signed_delivery_is_a_duplicate_and_changes_nothing(web, redis):
    api_id = str(uuid.uuid4())
    first = post_json(web, "/callbacks/plivo", {"api_id": api_id, "n": 1}, nonce="replay-me")
    replay = post_json(web, "/callbacks/plivo", {"api_id": api_id, "n": 1}, nonce="replay-me")
    assert first.json() == {"outcome": "early"} and replay.json() == {"outcome": "duplicate"}
    assert redis.llen(f"ab:orphan:{api_id}") == 1
    assert redis.hget("ab:metrics", "callbacks_replayed") == "1"


def test_refused_deliveries_are_counted_in_metrics(web):
    body = {"api_id": str(uuid.uuid4())}
    for _ in range(3):
        assert post_json(web, "/callbacks/plivo", body, token="forged").status_code == 403
    with web.client(key=None) as client:
        text = client.get("/metrics").text
    assert 'answerback_callbacks_rejected_total{reason="signature"} 3.0' in text


def test_main_account_header_is_checked_with_the_main_token(make_stack):
    stack = make_stack(db=3, workers=0, PLIVO_MAIN_AUTH_TOKEN="main-token")
    body = {"api_id": str(uuid.uuid4())}
    url = stack.web.url + "/callbacks/plivo"
    with stack.web.client(key=None) as client:
        for token, expected in (("main-token", 200), (AUTH_TOKEN, 403)):
            headers = {
                "Content-Type": "application/json",
                "X-Plivo-Signature-V3-Nonce": "n-" + token,
                "X-Plivo-Signature-Ma-V3": sdk_signature("POST", url, body, "n-" + token, token),
            }
            assert client.post("/callbacks/plivo", content=json.dumps(body), headers=headers).status_code == expected


def test_v2_signatures_only_when_turned_on(make_stack):
    import base64
    import hashlib
    import hmac

    body = {"api_id": str(uuid.uuid4())}
    for db, setting, expected in ((3, "false", 403), (4, "true", 200)):
        stack = make_stack(db=db, workers=0, ACCEPT_V2_SIGNATURES=setting)
        url = stack.web.url + "/callbacks/plivo"
        v2 = base64.b64encode(hmac.new(AUTH_TOKEN.encode(), (url + "n2").encode(), hashlib.sha256).digest()).decode()
        headers = {"Content-Type": "application/json", "X-Plivo-Signature-V2": v2, "X-Plivo-Signature-V2-Nonce": "n2"}
        with stack.web.client(key=None) as client:
            assert (
                client.post("/callbacks/plivo?x=1", content=json.dumps(body), headers=headers).status_code == expected
            )


def test_behind_a_proxy_only_a_signature_over_the_public_url_passes(make_stack):
    public = "https://hooks.example.com"
    stack = make_stack(db=3, workers=0, PUBLIC_URL=public)
    body = {"api_id": str(uuid.uuid4())}
    with stack.web.client(key=None) as client:
        for signed_url, expected in (
            (stack.web.url + "/callbacks/plivo?rid=x", 403),
            (public + "/callbacks/plivo?rid=x", 200),
        ):
            headers = {"Content-Type": "application/json", **signed_headers("POST", signed_url, body)}
            answer = client.post("/callbacks/plivo?rid=x", content=json.dumps(body), headers=headers)
            assert answer.status_code == expected, (signed_url, answer.text)


def test_the_webhooks_refusals_are_json_errors_as_every_views_are(web, redis):
    """The webhook is served in front of Flask (receiver/front.py): its errors still
    come from receiver/errors.py, with the status, the JSON shape and the headers of any view's."""
    with web.client(key=None) as client:
        answers = {
            "forged": client.post(
                "/callbacks/plivo",
                json={"api_id": str(uuid.uuid4())},
                headers={"X-Plivo-Signature-V3": "x", "X-Plivo-Signature-V3-Nonce": "n"},
            ),
            "text": client.post("/callbacks/plivo", content=b"hello", headers={"Content-Type": "text/plain"}),
            "huge form": client.post(
                "/callbacks/plivo",
                content=b"a=" + b"x" * 70_000,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
            "put": client.put("/callbacks/plivo"),
        }
        head = client.head("/callbacks/plivo")
        options = client.options("/callbacks/plivo")
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {"forged": 403, "text": 400, "huge form": 413, "put": 405}
    for answer in answers.values():
        assert answer.headers["Content-Type"] == "application/json"
        assert list(answer.json()) == ["error"] and answer.json()["error"]
    assert answers["huge form"].json() == {"error": "request body is larger than 65536 bytes"}
    assert head.status_code == 405 and head.headers["Allow"] == "GET, POST" and head.content == b""
    assert {"GET", "POST"} <= set(answers["put"].headers["Allow"].split(", "))
    assert options.status_code == 200 and {"GET", "POST"} <= set(options.headers["Allow"].split(", "))
    assert written_keys(redis) == []


def test_other_paths_still_reach_flask_and_the_webhooks_path_is_read_as_flask_reads_it(web, redis):
    body = {"api_id": str(uuid.uuid4())}
    with web.client(key=None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        trailing = client.post(
            "/callbacks/plivo/", json=body, headers=signed_headers("POST", web.url + "/callbacks/plivo/", body)
        )
        assert trailing.status_code == 404 and "error" in trailing.json()
        assert client.get("/v1/requests").status_code == 401
    # Flask's URL map reads //callbacks/plivo as /callbacks/plivo, and so does the webhook (httpx
    # would send it to a host named "callbacks": raw HTTP here)
    host, port = web.url.removeprefix("http://").split(":")
    content = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **signed_headers("POST", web.url + "/callbacks/plivo", body)}
    request = (
        b"POST //callbacks/plivo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(content)
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        + b"\r\n"
        + content
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        assert exchange(sock, request).startswith(b"HTTP/1.1 200 ")
    assert redis.exists(f"ab:orphan:{body['api_id']}")
