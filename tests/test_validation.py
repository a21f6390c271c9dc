"""receiver/validation.py: what a submission and the query arguments may be, checked before
anything is written, and the field a 400 names."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import MultiDict
from werkzeug.test import EnvironBuilder

from receiver.errors import BadRequest
from receiver.validation import (
    MAX_WAIT,
    int_arg,
    is_uuid,
    json_body,
    list_filter,
    parse_submission,
    submission_schema,
    wait_arg,
)

pytestmark = pytest.mark.fast

CALL = {"method": "POST", "path": "Call/", "params": {"to": "14155550101"}}


def refused(data) -> dict[str, str]:
    with pytest.raises(BadRequest) as raised:
        parse_submission(data)
    return raised.value.details.get("fields", {})


def test_a_submission_is_taken_with_its_method_and_path_normalised():
    taken = parse_submission(
        {
            "method": "get",
            "path": "Account//Call",
            "params": {"limit": 5, "to": ["a", 1]},
            "callback_method": "get",
            "callback_timeout": 30.0,
        }
    )
    assert (taken.method, taken.path, taken.callback_method, taken.callback_timeout) == (
        "GET",
        "Account/Call/",
        "GET",
        30,
    )


@pytest.mark.parametrize(
    "change, field",
    [
        ({"method": "PUT"}, "method"),
        ({"path": "/Call/"}, "path"),
        ({"path": "https://evil.example/Call/"}, "path"),
        ({"path": "Call/../Account/"}, "path"),
        ({"path": "Call/%2e%2e/"}, "path"),
        ({"path": ""}, "path"),
        ({"params": {"callback_url": "http://x.example/"}}, "params"),
        ({"method": "GET", "params": {"to": {"nested": 1}}}, "body"),  # the whole: it depends on the method
        ({"callback_timeout": 0}, "callback_timeout"),
        ({"callback_timeout": 1.5}, "callback_timeout"),
        ({"callback_timeout": True}, "callback_timeout"),
        ({"callback_timeout": "30"}, "callback_timeout"),
        ({"callback_method": "PATCH"}, "callback_method"),
        ({"notify_url": ""}, "notify_url"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_submission_out_of_shape_is_a_400_naming_the_field(change, field):
    assert list(refused(CALL | change)) == [field]


@pytest.mark.parametrize("data", [[CALL], "Call/", None, 3])
def test_a_body_that_is_not_an_object_is_a_400(data):
    with pytest.raises(BadRequest, match="JSON object"):
        parse_submission(data)


@pytest.mark.parametrize(
    "body, problem",
    [
        (b"{", "not valid JSON"),
        (b'{"x": NaN}', "not valid JSON"),
        (b'{"x": 1e999}', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"\xff", "not valid JSON"),
    ],
)
def test_a_body_that_is_not_json_is_a_400_saying_why(body, problem):
    request = EnvironBuilder(method="POST", data=body).get_request()
    with pytest.raises(BadRequest, match=problem):
        json_body(request)


def test_query_arguments_are_bounded_integers_and_known_statuses():
    args = MultiDict({"limit": "7", "big": "1" * 10, "neg": "-1", "wait": str(MAX_WAIT + 1), "status": "nope"})
    assert int_arg(args, "limit", 20, 1, 20) == 7 and int_arg(args, "absent", 20, 1, 20) == 20
    for name in ("big", "neg"):
        with pytest.raises(BadRequest, match=f"{name} must be an integer"):
            int_arg(args, name, 0, 0)
    with pytest.raises(BadRequest, match=f"from 0 to {MAX_WAIT}"):
        wait_arg(args)
    with pytest.raises(BadRequest, match="status must be one of"):
        list_filter(args)
    assert list_filter(MultiDict({"status": "queued"})).status == "queued" and list_filter(MultiDict()).status is None
    assert list_filter(MultiDict({"since": "2026-12-03T14:00:00.123Z"})).since == 1796306400123
    assert list_filter(MultiDict({"until": "2026-12-03t15:00:00+01:00", "path": "Call"})).until == 1796306400000


def test_only_a_uuid_becomes_part_of_a_key_name():
    assert is_uuid("01A23AFB-896A-79BA-8E39-F1C902789B27")
    assert not any(map(is_uuid, ["", "x", "01a23afb-896a-79ba-8e39-f1c902789b27:deliveries", "../01a23afb"]))


def test_the_schema_carries_this_deployments_limits():
    schema = submission_schema(max_callback_timeout=120, notifications=False)
    timeout = next(b for b in schema["properties"]["callback_timeout"]["anyOf"] if b.get("type") == "integer")
    assert timeout["maximum"] == 120 and "notify_url" not in schema["properties"]
    assert "notify_url" in submission_schema(120, notifications=True)["properties"]
