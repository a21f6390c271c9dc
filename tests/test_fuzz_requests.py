"""Any request at the whole app (in-process, `app.test_client()`, on the session's Redis in a
database of its own) is answered without a 5xx, and a refusal writes nothing.

Every example starts from the same seed state (tests/support/fuzz_state.py), so a failure
replays, shrinks, and prints a `@reproduce_failure` that works."""

from __future__ import annotations

import json

from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.support.fuzz_state import FUZZ
from tests.support.fuzz_strategies import (
    Req,
    callback_requests,
    random_requests,
    read_requests,
    submission_requests,
    without_long_waits,
)


def send(client, req: Req):
    return client.open(req.target, method=req.method, headers=req.headers, data=req.body)


def assert_json_error(answer, req: Req) -> None:
    if req.method == "HEAD":
        return
    body = json.loads(answer.get_data())
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], answer.get_data()


@settings(FUZZ, max_examples=600)
@given(data=st.data())
def test_any_request_is_answered_without_5xx_and_a_refusal_writes_nothing(fuzz_env, data):
    env = fuzz_env
    env.db.reset()
    req = data.draw(
        st.one_of(
            submission_requests(env.pools),
            read_requests(env.pools),
            callback_requests(env.pools),
            random_requests(env.pools),
        ),
        label="request",
    )
    req = without_long_waits(req, env.pools)
    before = env.db.snapshot()
    answer = send(env.client(req.app), req)
    status = answer.status_code
    event(f"{req.app} {req.method} {req.path.split('/')[1][:12]} -> {status}")
    assert status < 500, (status, answer.get_data()[:300])
    if status >= 400:
        assert_json_error(answer, req)
    if 400 <= status < 500:
        assert env.db.snapshot() == before, f"a {status} answer changed Redis"
