"""Callbacks with valid api_ids (unsigned, and some signed) reach the store: matched to
their request by rid or api_id, kept as orphans, marked late, and an identical delivery
again changes nothing.

Every example starts from an empty database and an empty model (`CallbackEnv.reset`) and
makes the requests it needs, so a failure replays and shrinks."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from hypothesis import event, given, settings
from hypothesis import strategies as st

from receiver.signature import sign_v3
from store.deliveries import OUTCOMES
from tests.support.fuzz_state import FUZZ, PUBLIC_URL, TOKEN, CallbackEnv
from tests.support.fuzz_strategies import FIELD_NAMES, FORM_VALUES, KEY, RICH_JSON, bearer


def request_in(env: CallbackEnv, state: str) -> tuple[str, str | None]:
    """A request in `state` ("none": no request), and its api_id if it has one. A completed
    one got its first delivery (a body no example draws) through the app."""
    if state == "none":
        return "", None
    if state != "completed":
        return env.fresh(state)
    rid, api_id = env.fresh("pending")
    first = {"api_id": api_id, "status": "completed"}
    answer = env.app.test_client().post(f"/callbacks/plivo?rid={rid}", json=first)
    assert answer.status_code == 200 and answer.json == {"outcome": "matched"}, answer.get_data()
    env.seen.add((rid, api_id + "\n" + json.dumps(first, sort_keys=True)))
    env.status[rid] = "completed"
    return rid, api_id


@settings(FUZZ, max_examples=400)
@given(
    state=st.sampled_from(["none", "queued", "pending", "expired", "completed"]),
    rid_mode=st.sampled_from(["real", "real", "absent", "empty", "random", "uuid"]),
    api_mode=st.sampled_from(["fresh", "own", "own", "another"]),
    shape=st.sampled_from(["GET", "JSON", "JSON", "FORM"]),
    json_fields=st.dictionaries(FIELD_NAMES, RICH_JSON, max_size=5),
    form_fields=st.dictionaries(FIELD_NAMES, FORM_VALUES, max_size=5),
    content_type_params=st.sampled_from(["", "; charset=utf-8", "; charset=UTF-8"]),
    fresh_api_id=st.uuids().map(str),
    random_rid=st.text(max_size=20),
    uuid_rid=st.uuids().map(str),
    signed=st.sampled_from([False, False, True]),
    nonce=st.uuids().map(str),
)
def test_callbacks_reach_the_store_matched_and_deduplicated(
    callback_env,
    state,
    rid_mode,
    api_mode,
    shape,
    json_fields,
    form_fields,
    content_type_params,
    fresh_api_id,
    random_rid,
    uuid_rid,
    signed,
    nonce,
):
    env = callback_env
    env.reset()
    another_api_id = request_in(env, "pending")[1] if api_mode == "another" else None
    rid, own_api_id = request_in(env, state)  # after `another`: a queued one must be made last
    api_id = {"fresh": None, "own": own_api_id, "another": another_api_id}[api_mode] or fresh_api_id
    rid_param = {"real": rid or None, "absent": None, "empty": "", "random": random_rid, "uuid": uuid_rid}[rid_mode]

    if shape == "JSON":
        body: dict[str, Any] = {**json_fields, "api_id": api_id}
        fields = body
    else:
        fields = {**form_fields, "api_id": api_id}
        body = {k: v for k, v in fields.items() if v != []}
    query = [("rid", rid_param)] if rid_param is not None else []
    client = env.app.test_client()
    path = "/callbacks/plivo"
    if shape == "GET":
        path += "?" + urlencode(query + list(fields.items()), doseq=True)
        data, content_type, signed_params = b"", None, {}
    else:
        path += "?" + urlencode(query) if query else ""
        if shape == "JSON":
            data, content_type, signed_params = json.dumps(body).encode(), "application/json", body
        else:
            data = urlencode(list(fields.items()), doseq=True).encode()
            content_type = "application/x-www-form-urlencoded"
            signed_params = {k: v if isinstance(v, list) else [v] for k, v in fields.items()}
    headers = {"Content-Type": content_type + content_type_params} if content_type else {}
    if signed:  # signed by the project's own signer (test_signature.py holds it to the SDK)
        try:
            signature = sign_v3(TOKEN, "GET" if shape == "GET" else "POST", PUBLIC_URL + path, nonce, signed_params)
            headers |= {"X-Plivo-Signature-V3-Nonce": nonce, "X-Plivo-Signature-V3": signature}
        except UnicodeEncodeError:  # a lone surrogate in a JSON string has no UTF-8 to sign: sent unsigned
            signed = False
    sender = env.signed_app.test_client() if signed else client

    def deliver():
        return sender.open(path, method="GET" if shape == "GET" else "POST", data=data, headers=headers)

    # What the store must answer: by rid if it names a request, else by api_id, else an orphan.
    target = rid_param if rid_param and rid_param in env.status else env.api_to_rid.get(api_id, "")
    digest_input = (target or "orphan:" + api_id, api_id + "\n" + json.dumps(body, sort_keys=True))
    if digest_input in env.seen:
        expected = "duplicate"
    elif not target:
        expected = "early"
    else:
        expected = "late" if env.status[target] == "expired" else "matched"

    first = deliver()
    event(f"{'signed' if signed else 'unsigned'} {shape} {state} rid={rid_mode} -> {expected}")
    assert first.status_code == 200, first.get_data()
    assert first.json["outcome"] in OUTCOMES
    assert first.json["outcome"] == expected, (first.json, expected)
    if expected == "duplicate":
        return  # nothing was stored, so nothing more to check
    env.seen.add(digest_input)
    if target:
        record = client.get(f"/v1/requests/{target}", headers=bearer(KEY)).json
        assert record["status"] == "completed"
        if env.status[target] != "completed":
            assert record["response"] == body and record["deliveries"] == 1
            assert record["late"] is (expected == "late")
        env.status[target] = "completed"
        env.api_to_rid[api_id] = target

    watched = env.watched(target, api_id)
    before = env.db.snapshot(watched), env.db.size()
    again = deliver()
    assert again.status_code == 200 and again.json == {"outcome": "duplicate"}, again.get_data()
    assert (env.db.snapshot(watched), env.db.size()) == before, "an identical delivery changed Redis"
    if target:  # but the request's timeline, which lists it
        timeline = client.get(f"/v1/requests/{target}/events", headers=bearer(KEY)).json["events"]
        assert any(e["event"] == "callback" and e["verdict"] == "duplicate" for e in timeline), timeline
