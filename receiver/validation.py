"""The shapes of client input, checked with pydantic before anything is written.

Each limit is stated here once; the OpenAPI document (receiver/openapi.py) is generated
from these models and constants, so the contract and the checks cannot drift apart.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from flask import url_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator, model_validator
from pydantic.json_schema import JsonSchemaValue

from config import CALLBACK_METHODS, CallbackMethod
from notify_hosts import MAX_URL
from receiver.errors import BadRequest
from store.records import STATUSES, Filter

METHODS = ("GET", "POST", "DELETE")
QUERY_METHODS = ("GET", "DELETE")  # these send params in the query string
RESERVED_PARAMS = ("callback_url", "callback_method")
MAX_WAIT = 60  # seconds ?wait may hold an answer
PAGE_SIZE = 20  # the largest (and default) page of a list
MAX_QUERY_INT = 999_999_999  # the largest integer a query argument may carry
LIST_ARGS = ("limit", "offset", "status", "q", "path", "since", "until")  # the query parameters of GET /v1/requests
FILTER_ARGS = ("status", "path", "since", "until")  # ... that narrow it (and a bulk retry, in its body)
MAX_FILTER_TEXT = 512  # characters of a path or q filter
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WAIT_ARGS = ("wait",)  # ... of reading one request or result
MAX_IDEMPOTENCY_KEY = 255  # characters

PATH_SEGMENT = re.compile(r"^[A-Za-z0-9_\-.~]+$")
REQUEST_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# PATH_SEGMENT without "." and "..", as a JSON Schema pattern for the whole path.
_SEGMENT = "[A-Za-z0-9_~-][A-Za-z0-9_.~-]*|[.][A-Za-z0-9_.~-]*[A-Za-z0-9_~-][A-Za-z0-9_.~-]*"
PATH_PATTERN = f"^(?!.*(^|/)[.][.]?(/|$))({_SEGMENT})(/({_SEGMENT}))*/?$"
QUERY_SCALAR: JsonSchemaValue = {"type": ["string", "number", "boolean"]}


def is_uuid(value: str) -> bool:
    """Ids from the URL are checked before they become part of a Redis key name."""
    return bool(REQUEST_ID.match(value.lower()))


def any_case(words: tuple[str, ...]) -> str:
    """A pattern for any of `words` in any letter case: JSON Schema patterns take no flags."""
    letters = ("".join(f"[{c.upper()}{c.lower()}]" for c in word) for word in words)
    return "^(" + "|".join(letters) + ")$"


class SubmissionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"method": {"pattern": any_case(QUERY_METHODS)}}},
            "then": {
                "properties": {
                    "params": {
                        "additionalProperties": {"anyOf": [QUERY_SCALAR, {"type": "array", "items": QUERY_SCALAR}]}
                    }
                }
            },
        },
    )

    method: Annotated[
        str,
        WithJsonSchema(
            {"type": "string", "pattern": any_case(METHODS), "description": "GET, POST or DELETE, any letter case"}
        ),
    ]
    path: Annotated[
        str,
        WithJsonSchema(
            {
                "type": "string",
                "pattern": PATH_PATTERN,
                "description": "relative to Account/{auth_id}/, e.g. Call/; no scheme, host, leading /, . or ..",
            }
        ),
    ]
    params: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra={
            "propertyNames": {"not": {"enum": list(RESERVED_PARAMS)}},
            "description": "POST: the JSON body; GET and DELETE: the query string (scalars and lists of them)",
        },
    )
    callback_method: Annotated[
        CallbackMethod | None,
        WithJsonSchema(
            {
                "anyOf": [{"type": "string", "pattern": any_case(CALLBACK_METHODS)}, {"type": "null"}],
                "description": "POST or GET, any letter case; null or absent: CALLBACK_METHOD",
            }
        ),
    ] = None
    callback_timeout: int | None = Field(default=None, ge=1, description="seconds; at most MAX_CALLBACK_TIMEOUT")
    notify_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_URL,
        description=(
            "http(s) URL on a host in NOTIFY_HOSTS; the record is POSTed there, signed per Standard Webhooks, "
            "when the request finishes"
        ),
    )

    @field_validator("method")
    @classmethod
    def known_method(cls, value: str) -> str:
        upper = value.upper()
        if upper not in METHODS:
            raise ValueError("must be " + ", ".join(METHODS[:-1]) + " or " + METHODS[-1])
        return upper

    @field_validator("callback_method", mode="before")
    @classmethod
    def upper_callback_method(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("callback_timeout", mode="before")
    @classmethod
    def whole_seconds(cls, value: Any) -> Any:
        """A JSON integer, 30 or 30.0 alike; never a boolean, text or a fraction."""
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError("must be a whole number of seconds")

    @field_validator("path")
    @classmethod
    def relative_path(cls, value: str) -> str:
        if value.startswith("/") or "://" in value or "\\" in value:
            raise ValueError("must be relative to Account/{auth_id}/, e.g. Call/")
        segments = [s for s in value.split("/") if s]
        if not segments or any(s in (".", "..") or not PATH_SEGMENT.match(s) for s in segments):
            raise ValueError("must be path segments of letters, digits and -_.~, without . or ..")
        return "/".join(segments) + "/"

    @field_validator("params")
    @classmethod
    def sendable_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in RESERVED_PARAMS:
            if name in value:
                raise ValueError(f"{name} is set by Answerback; use callback_method at the top level")
        return value

    @model_validator(mode="after")
    def query_params_are_flat(self) -> SubmissionIn:
        """GET and DELETE send params in the query string: only scalars and lists of scalars fit."""
        if self.method in QUERY_METHODS:
            for name, value in self.params.items():
                items = value if isinstance(value, list) else [value]
                if not all(isinstance(v, (str, int, float, bool)) for v in items):
                    raise ValueError(
                        f"params.{name}: a {self.method} request sends params in the "
                        "query string; use text, numbers, booleans or lists of them"
                    )
        return self


def json_body(req: Any) -> Any:
    """The request's JSON, or a 400 naming the problem (malformed, too deeply nested, NaN)."""
    try:
        return json.loads(req.get_data(cache=True), parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def submission_schema(max_callback_timeout: int, notifications: bool) -> dict[str, Any]:
    """The submission's JSON Schema, from the model, with this deployment's longest timeout;
    without notifications (no NOTIFY_HOSTS) it takes no notify_url."""
    schema = SubmissionIn.model_json_schema()
    timeout = schema["properties"]["callback_timeout"]
    next(b for b in timeout["anyOf"] if b.get("type") == "integer")["maximum"] = max_callback_timeout
    if not notifications:
        del schema["properties"]["notify_url"]
    return schema


def parse_submission(data: Any) -> SubmissionIn:
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return SubmissionIn.model_validate(data)
    except ValidationError as exc:
        raise BadRequest("invalid submission", fields=_field_errors(exc)) from None


def _field_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(p) for p in err["loc"]) or "body"
        errors[name] = err["msg"].removeprefix("Value error, ")
    return errors


def int_arg(args: Any, name: str, default: int, low: int, high: int | None = None) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    if not re.fullmatch(f"[0-9]{{1,{len(str(MAX_QUERY_INT))}}}", raw):
        raise BadRequest(f"{name} must be an integer" + _range_text(low, high))
    value = int(raw)
    if value < low or (high is not None and value > high):
        raise BadRequest(f"{name} must be an integer" + _range_text(low, high))
    return value


def _range_text(low: int, high: int | None) -> str:
    return f" from {low} to {high}" if high is not None else f" of at least {low}"


def page_meta(endpoint: str, limit: int, offset: int, total: int, **query: str | None) -> dict[str, Any]:
    """A list's `meta`, as Plivo pages: its links to the pages beside it keep the list's own
    query arguments (`query`, those given)."""

    def link(at: int) -> str:
        kept = {name: value for name, value in query.items() if value}
        return url_for(endpoint) + "?" + urlencode({"limit": limit, "offset": at} | kept)

    return {
        "limit": limit,
        "offset": offset,
        "total_count": total,
        "next": link(offset + limit) if offset + limit < total else None,
        "previous": link(max(0, offset - limit)) if offset > 0 else None,
    }


def known_args(args: Any, allowed: tuple[str, ...]) -> None:
    """Refuse a query parameter this endpoint does not take: a misspelt filter would otherwise
    be ignored silently and answer more than was asked for."""
    unknown = sorted(name for name in args if name not in allowed)
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise BadRequest(f"unknown query parameter {shown}; this endpoint takes " + (", ".join(allowed) or "none"))


def list_filter(args: Any, statuses: tuple[str, ...] = STATUSES) -> Filter:
    """The filters of a listing (query parameters) or a bulk retry (its JSON body): each bad
    value is a 400 naming its parameter."""
    status = args.get("status")
    if status is not None and status not in statuses:
        raise BadRequest(f"status must be one of {', '.join(statuses)}", parameter="status")
    path = args.get("path")
    if path is not None:
        path = _filter_path(path)
    return Filter(status=status, path=path, since=time_arg(args, "since"), until=time_arg(args, "until"))


def q_arg(args: Any) -> str | None:
    q = args.get("q")
    if q is not None and not 1 <= len(q) <= MAX_FILTER_TEXT:
        raise BadRequest(f"q must be 1 to {MAX_FILTER_TEXT} characters", parameter="q")
    return q


def _filter_path(value: Any) -> str:
    """A path filter as a submission's path is stored (Call -> Call/), or a 400."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_FILTER_TEXT:
        raise BadRequest(f"path must be a path of 1 to {MAX_FILTER_TEXT} characters, e.g. Message/", parameter="path")
    try:
        return SubmissionIn.relative_path(value)
    except ValueError as exc:
        raise BadRequest(f"path {exc}", parameter="path") from None


def time_arg(args: Any, name: str) -> int | None:
    """An ISO 8601 time (UTC without an offset; any RFC 3339 date-time) as milliseconds since
    the epoch, or a 400. A leap second counts as the second before it."""
    raw = args.get(name)
    if raw is None:
        return None
    text = raw.upper() if isinstance(raw, str) and len(raw) <= 40 and raw[:4].isdigit() else ""
    try:
        moment = datetime.fromisoformat(re.sub(r"(T\d\d:\d\d):60", r"\1:59", text))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 time, e.g. 2026-12-03T14:00:00Z", parameter=name) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)  # no overflow at year 1 or 9999 with an offset


class BulkRetryIn(BaseModel):
    """POST /v1/requests/retry: which failed or expired requests of the tenant to retry. Strict:
    a `preview` of "no" or 0 read as false would start the retry the client meant to count."""

    model_config = ConfigDict(extra="forbid", strict=True)

    status: Literal["failed", "expired"] | None = Field(default=None, description="absent: both")
    path: str | None = Field(
        default=None,
        json_schema_extra={"maxLength": MAX_FILTER_TEXT, "pattern": PATH_PATTERN},
        description="exact upstream path, e.g. Message/ (checked as the listing's filter is)",
    )
    since: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}, description="inclusive bound on submitted_at"
    )
    until: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}, description="inclusive bound on submitted_at"
    )
    preview: bool = Field(default=False, description="true: only count what would be retried")


def parse_bulk_retry(data: Any) -> tuple[Filter, bool]:
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        form = BulkRetryIn.model_validate(data)
    except ValidationError as exc:
        raise BadRequest("invalid bulk retry", fields=_field_errors(exc)) from None
    given = {name: value for name, value in form.model_dump().items() if value is not None and name != "preview"}
    return list_filter(given, ("failed", "expired")), form.preview


def wait_arg(args: Any) -> int:
    return int_arg(args, "wait", 0, 0, MAX_WAIT)
