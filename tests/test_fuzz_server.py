"""Real HTTP to a real gunicorn: whatever arrives is answered without a 5xx, and every
refusal is a JSON error. The web runs on a stack and Redis database of its own with no
worker, flushed before every example, so an example meets the same state when replayed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.fuzz_state import FUZZ
from tests.support.fuzz_strategies import (
    HTTP_METHODS,
    JSON_VALUES,
    RAW_PATHS,
    VISIBLE,
    any_submission,
    callback_body,
    dumps,
    garbage_bytes,
    oversized,
)
from tests.support.services import KEY_A

DB_SERVER = 2


@pytest.fixture
def server(make_stack):
    return make_stack(db=DB_SERVER, workers=0)


@settings(FUZZ, max_examples=100)
@given(
    method=st.sampled_from([*HTTP_METHODS, "PROPFIND", "TRACE", "FOO"]),
    path=RAW_PATHS,
    auth=st.sampled_from([None, f"Bearer {KEY_A}", "Bearer nope", "Basic eDp5", "x"]),
    content_type=st.sampled_from(
        [
            None,
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
            "multipart/form-data; boundary=b",
            "garbage",
        ]
    ),
    extra=st.dictionaries(
        st.sampled_from(
            [
                "Idempotency-Key",
                "X-Plivo-Signature-V3",
                "X-Plivo-Signature-V3-Nonce",
                "Accept",
                "X-Forwarded-For",
                "Transfer-Encoding-Foo",
                "Expect-Not",
            ]
        ),
        VISIBLE,
        max_size=3,
    ),
    body=st.one_of(
        st.just(b""),
        garbage_bytes,
        JSON_VALUES.map(dumps),
        callback_body.map(dumps),
        any_submission.map(dumps),
        oversized,
    ),
)
def test_real_server_never_answers_5xx(server, method, path, auth, content_type, extra, body):
    server.redis.flushdb()
    headers = dict(extra)
    if auth:
        headers["Authorization"] = auth
    if content_type:
        headers["Content-Type"] = content_type
    with server.web.client(key=None) as http:  # a connection of its own (test_keep_alive_*)
        answer = http.request(method, path, headers=headers, content=body)
    assert answer.status_code < 500, (answer.status_code, answer.text[:300])
    if answer.status_code >= 400 and method != "HEAD":
        error = answer.json()
        assert isinstance(error, dict) and isinstance(error.get("error"), str)
