"""A request's timeline: what happened to it, in time order, for the operator's console.

Most of it is read from what every request keeps anyway, so that the usual life of a request
costs no memory more: the record (its submission, the send that was accepted or answered at
once, its api_id, the delivery kept as its response, its final status), its other deliveries
(keys.deliveries) and its notification attempts (keys.notifications). What those cannot tell
is kept in one bounded list per request (keys.events), written by the script that runs at
that step (lua/prelude.lua `add_event`): a send attempt that did not complete the request, a
callback answered other than `matched` (duplicate, late, early, refused), an expiry that a
late callback overturned. Only the newest EVENTS_KEPT are kept; `dropped` says how many went.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from redis import Redis

from store import keys
from store.deliveries import short_digest
from store.records import FINAL, Requests, iso, json_field

EVENTS_KEPT = 50  # as lua/prelude.lua keeps
ORDER = ("submitted", "sent", "api_id", "callback", *sorted(FINAL), "notification", "retried")
_RANK = {name: i for i, name in enumerate(ORDER)}
OVERTURNED = ("late", "early")  # verdicts of a listed callback that is also a stored delivery


@dataclass(frozen=True)
class Timeline:
    events: list[dict[str, Any]]  # each with `at` (ISO 8601) and `event`, oldest first
    dropped: int  # events no longer kept (the list keeps the newest EVENTS_KEPT)


class Events:
    def __init__(self, redis: Redis, requests: Requests) -> None:
        self.redis = redis
        self.requests = requests

    def timeline(self, fields: dict[str, str], signature: str) -> Timeline:
        """The timeline of the request whose record's fields are `fields`. `signature`: what the
        webhook checks now ("valid" or "unchecked"), which every stored delivery passed."""
        rid = fields["request_id"]
        at = self.requests.partitions.at(rid)  # its lists live in its partition
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(keys.at(at, keys.deliveries(rid)), 0, -1)
            pipe.lrange(keys.at(at, keys.notifications(rid)), 0, -1)
            pipe.lrange(keys.at(at, keys.events(rid)), 0, -1)
            delivered, notified, listed = cast("list[list[str]]", pipe.execute())
        retried_at = None
        if fields.get("retried_as"):
            retry = self.requests.get(fields["retried_as"])
            retried_at = retry.fields.get("submitted_at") if retry else None
        return build(fields, delivered, notified, listed, signature, retried_at)


def build(
    f: dict[str, str],
    delivered: list[str],
    notified: list[str],
    listed: list[str],
    signature: str,
    retried_at: str | None = None,
) -> Timeline:
    """The timeline from a record's fields and its lists as stored (see the module's docstring)."""
    extra = [json.loads(entry.partition(" ")[2]) for entry in listed]
    dropped = int(listed[-1].partition(" ")[0]) - len(listed) if listed else 0
    events: list[dict[str, Any]] = []

    def add(at: str | float | None, event: str, **values: Any) -> None:
        if at is not None:
            events.append({"at": float(at), "event": event} | {k: v for k, v in values.items() if v is not None})

    add(f["submitted_at"], "submitted", idempotency_key=f.get("idempotency_key"), retry_of=f.get("retry_of"))
    _last_send(f, extra, add)
    if f.get("api_id"):
        add(_named_at(f), "api_id", api_id=f["api_id"])
    _callbacks(f, delivered, extra, signature, add)
    for event in extra:
        event.pop("d", None)
        add(event.pop("at"), event.pop("event"), **event)
    if f["status"] in FINAL:
        error = json_field(f.get("error")) if f["status"] != "completed" else None
        add(f.get("completed_at"), f["status"], reason=error.get("reason") if isinstance(error, dict) else None)
    for entry in notified:
        n = json.loads(entry)
        add(
            _ms(n["at"]),
            "notification",
            attempt=n.get("attempt"),
            outcome=n.get("outcome"),
            status_code=n.get("status"),
            error=n.get("error"),
            next_at=n.get("next_at"),
        )
    if f.get("retried_as"):
        add(retried_at or f.get("completed_at"), "retried", retried_as=f["retried_as"])
    events.sort(key=lambda e: (int(e["at"]), _RANK[e["event"]]))  # whole ms, as shown
    return Timeline([e | {"at": iso(int(e["at"]))} for e in events], max(0, dropped))


def _last_send(f: dict[str, str], extra: list[dict[str, Any]], add: Any) -> None:
    """The last send attempt, unless listed (one that did not complete): accepted when the
    upstream named an api_id or answered at once; without an outcome while still in flight."""
    attempts = int(f.get("attempts") or 0)
    if (
        not attempts
        or not f.get("sent_at")
        or any(e["event"] == "sent" and e.get("attempt") == attempts for e in extra)
    ):
        return
    sent_at = float(f["sent_at"])
    answered_at = _registered_at(f) if f.get("api_id") else None
    if answered_at is None and f["status"] == "completed" and not f.get("delivery_at") and not f.get("api_id"):
        answered_at = float(f["completed_at"])  # a synchronous answer
    if answered_at is None:
        add(sent_at, "sent", attempt=attempts)
        return
    add(sent_at, "sent", attempt=attempts, latency_ms=max(0, round(answered_at - sent_at)), outcome="accepted")


def _registered_at(f: dict[str, str]) -> float | None:
    """When the api_id was registered: its callback deadline, less the callback_timeout it was
    set from (else when the delivery that named it came)."""
    if f.get("deadline") and f.get("timeout"):
        return float(f["deadline"]) - int(f["timeout"]) * 1000
    return float(f["delivery_at"]) if f.get("delivery_at") else None


def _named_at(f: dict[str, str]) -> float | None:
    """When the api_id became known: registered by the worker, or carried by a callback that came
    first (the upstream calls back once it has answered, so a worker that is slow to record the
    answer must not put the api_id after the callback that names it)."""
    moments = [m for m in (_registered_at(f), _float(f.get("delivery_at"))) if m is not None]
    return min(moments) if moments else None


def _float(value: str | None) -> float | None:
    return float(value) if value else None


def _callbacks(f: dict[str, str], delivered: list[str], extra: list[dict[str, Any]], signature: str, add: Any) -> None:
    """The stored deliveries, matched, except those a listed late or early callback stands for."""
    stored: list[tuple[float, str, str, int]] = []  # (received at, method, digest, size)
    if f.get("delivery_at"):
        response = f.get("response", "")
        digest = short_digest(f"{f.get('api_id', '')}\n{response}")
        stored.append((float(f["delivery_at"]), f.get("delivery_method", ""), digest, len(response.encode())))
    for entry in delivered:
        digest, _, raw = entry.partition(" ")
        d = json.loads(raw)
        canonical = json.dumps(d["body"], separators=(",", ":"), sort_keys=True)
        stored.append((float(d["received_at"]), d["method"], digest, len(canonical.encode())))
    standing_for = [e for e in extra if e["event"] == "callback" and e.get("verdict") in OVERTURNED]
    for at, method, digest, size in stored:
        listed = next((e for e in standing_for if e.get("d") == digest), None)
        if listed is not None:
            standing_for.remove(listed)
            continue
        add(at, "callback", method=method, verdict="matched", signature=signature, size=size)


def _ms(value: str) -> float:
    return datetime.fromisoformat(value).timestamp() * 1000
