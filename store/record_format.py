"""How a request's record is stored: one string, packed by the Lua scripts (lua/prelude.lua).

The record is a msgpack array: the format version, then the value of each field in the
order of RECORD_FIELDS (false where unset). Field names are not stored, so the position
is the name: a field is only ever appended, never inserted, removed or reordered, and
appending one bumps RECORD_VERSION (tests/test_record_format.py holds every version's list).

A record whose first element is not a number was written before the version element
existed: version 0, the fields of version 1 without the tag, read as such. A record of a
newer version than RECORD_VERSION is refused, naming its version, rather than read: this
code would not know its newer fields and would drop them when it wrote the record back
(an older process still running during a deployment, or a rollback)."""

from __future__ import annotations

RECORD_VERSION = 2


def pairs(flat: list[str]) -> dict[str, str]:
    """A record as the scripts answer it, HGETALL-style pairs (lua/prelude.lua read_record), as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


RECORD_FIELDS = (
    "tenant",
    "status",
    "method",
    "path",
    "callback_method",
    "submitted_at",
    "timeout",
    "api_class",
    "attempts",
    "sent_at",
    "api_id",
    "deadline",
    "completed_at",
    "late",
    "delivery_at",
    "delivery_method",
    "params",
    "response",
    "error",
    "notify_url",
    "notify_host",
    "notify_status",
    "notify_event",
    "notify_attempts",
    "notify_error",
    "notify_delivered_at",
    "drainer",
    "claim_id",
    "retry_of",  # version 2: the request this one retries (POST /v1/requests/{id}/retry)
    "retried_as",  # version 2: the request that retried this one
    "idempotency_key",  # version 2: as the client sent it, for the timeline (store/events.py)
)


def lua_definitions() -> str:
    """RECORD_VERSION and FIELDS as the prelude uses them."""
    names = ", ".join(f"'{name}'" for name in RECORD_FIELDS)
    return f"local RECORD_VERSION = {RECORD_VERSION}\nlocal FIELDS = {{{names}}}\n"
