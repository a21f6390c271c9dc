"""Submissions and callbacks are served before Flask's dispatch (receiver/front.py). Flask's
view for a submission is the same function: both answer alike, to the header and the byte."""

from __future__ import annotations

import gc
import json
import uuid
from typing import Any

import pytest
from werkzeug.datastructures import EnvironHeaders
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from tests.support.fuzz_state import build_app, close_app
from tests.support.fuzz_strategies import KEY, bearer

pytestmark = pytest.mark.fast

SUBMISSION = {"method": "POST", "path": "Message/", "params": {"src": "1555", "dst": "1666", "text": "hi"}}


@pytest.fixture
def app(redis_server):
    app = build_app(f"redis://127.0.0.1:{redis_server.port}/4", "")
    try:
        yield app
    finally:
        app.extensions["answerback"].redis.flushdb()
        close_app(app)


def call(wsgi, path: str, method: str = "POST", **builder: Any) -> tuple[str, dict[str, str], bytes]:
    environ = EnvironBuilder(path=path, method=method, **builder).get_environ()
    answer: list[Any] = []
    body = b"".join(wsgi(environ, lambda status, headers, exc_info=None: answer.extend((status, headers))))
    status, headers = answer
    return status, dict(headers), body


def test_a_submission_is_answered_before_flask_as_flasks_own_view_answers_it(app):
    front, flask = app.wsgi_app, app.wsgi_app.flask_app
    assert front is not flask
    answers = {}
    for name, wsgi in (("front", front), ("flask", flask)):
        idem = {"Idempotency-Key": f"key-{name}"}
        first = call(wsgi, "/v1/requests", json=SUBMISSION, headers={**bearer(KEY), **idem})
        replay = call(wsgi, "/v1/requests", json=SUBMISSION, headers={**bearer(KEY), **idem})
        answers[name] = first, replay
    for first, replay in answers.values():
        status, headers, body = first
        record = json.loads(body)
        assert status == "202 ACCEPTED" and body.endswith(b"\n")
        assert headers["Content-Type"] == "application/json"
        assert headers["Content-Length"] == str(len(body))
        assert headers["Location"] == f"/v1/requests/{record['request_id']}"
        assert "Idempotent-Replayed" not in headers
        assert replay[0] == status and replay[1]["Idempotent-Replayed"] == "true"
        assert json.loads(replay[2])["request_id"] == record["request_id"]
    (front_first, _), (flask_first, _) = answers["front"], answers["flask"]
    without_location = [
        {k: v for k, v in headers.items() if k != "Location"} for headers in (front_first[1], flask_first[1])
    ]
    assert without_location[0] == without_location[1]
    front_record, flask_record = json.loads(front_first[2]), json.loads(flask_first[2])
    assert list(front_record) == list(flask_record)
    different = {"request_id", "submitted_at"}
    assert {k: v for k, v in front_record.items() if k not in different} == {
        k: v for k, v in flask_record.items() if k not in different
    }


@pytest.mark.parametrize(
    "builder, status",
    [
        ({"json": SUBMISSION}, 401),  # no key
        ({"json": SUBMISSION, "headers": bearer("wrong")}, 401),
        ({"data": b"method=POST", "content_type": "application/x-www-form-urlencoded", "headers": bearer(KEY)}, 415),
        ({"data": b"{", "content_type": "application/json", "headers": bearer(KEY)}, 400),
        ({"json": {**SUBMISSION, "path": "../Call/"}, "headers": bearer(KEY)}, 400),
        ({"data": b"[" + b" " * 70_000 + b"]", "content_type": "application/json", "headers": bearer(KEY)}, 413),
    ],
)
def test_a_refused_submission_gets_the_same_json_error_before_flask_as_in_it(app, builder, status):
    front = call(app.wsgi_app, "/v1/requests", **builder)
    flask = call(app.wsgi_app.flask_app, "/v1/requests", **builder)
    assert front[0].startswith(f"{status} ") and flask[0] == front[0]
    assert front[2] == flask[2] and json.loads(front[2])["error"]
    assert front[1] == flask[1]  # Content-Type, Content-Length, WWW-Authenticate on 401
    assert app.extensions["answerback"].redis.keys("ab:r*") == []


def test_other_requests_to_the_submissions_url_still_reach_flask(app):
    status, headers, body = call(app.wsgi_app, "/v1/requests", "GET", headers=bearer(KEY))
    assert status == "200 OK" and json.loads(body)["objects"] == []
    status, headers, _ = call(app.wsgi_app, "/v1/requests", "PUT", headers=bearer(KEY))
    assert status.startswith("405 ") and {"GET", "POST"} <= set(headers["Allow"].split(", "))


@pytest.mark.parametrize("what", ["callback", "submission"])
def test_a_request_served_before_flask_leaves_nothing_for_the_garbage_collector(app, what):
    """Its request objects are freed the moment it answers. A reference cycle per request
    (werkzeug's environ <-> request) left them to the collector, whose full passes then came
    often and, in a web process holding 10,000 waiters, took up to 0.4 s."""

    def once() -> None:
        if what == "callback":
            status, _, body = call(app.wsgi_app, "/callbacks/plivo", json={"api_id": str(uuid.uuid4())})
            assert (status, json.loads(body)) == ("200 OK", {"outcome": "early"})
        else:
            status, _, _ = call(app.wsgi_app, "/v1/requests", json=SUBMISSION, headers=bearer(KEY))
            assert status == "202 ACCEPTED"

    once()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept in gc.garbage, not freed
    try:
        for _ in range(50):
            once()
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if isinstance(o, (Request, EnvironHeaders))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []
