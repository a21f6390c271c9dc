"""Request records, callback deliveries and timelines as typed objects; the server's JSON stays in `raw`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

STATUSES = ("queued", "sending", "pending", "completed", "failed", "expired")
FINAL_STATUSES = ("completed", "failed", "expired")
TIMESTAMPS = ("submitted_at", "sent_at", "completed_at", "deadline")


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Record:
    """One request as the server last showed it. Fields the server adds later are in `raw`."""

    request_id: str
    status: str
    method: str | None = None
    path: str | None = None
    callback_method: str | None = None
    api_id: str | None = None
    submitted_at: datetime | None = None
    sent_at: datetime | None = None
    completed_at: datetime | None = None
    deadline: datetime | None = None
    attempts: int = 0
    late: bool = False
    deliveries: int = 0
    response: Any = None
    error: Any = None
    notify: Any = None  # the state of notifying `notify_url`, when the submission gave one
    retry_of: str | None = None  # the request this one retries
    retried_as: str | None = None  # the request that retried this one
    replayed: bool = False  # this answer was an Idempotency-Key replay of an earlier submission
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], **extra: Any) -> Record:
        known = {f.name for f in fields(cls)} - {"raw", "replayed"}
        values = {name: data[name] for name in known if name in data}
        values |= {name: parse_time(data.get(name)) for name in TIMESTAMPS}
        return cls(**values, raw=data, **extra)

    @property
    def finished(self) -> bool:
        """completed, failed or expired: nothing will change it but a late callback."""
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class BulkRetry:
    """A bulk retry (`Client.retry_matching`): how many requests it takes and, once started,
    its id and progress (`Client.retry_progress`). A preview has no `bulk_id`."""

    count: int
    bulk_id: str | None = None
    status: str | None = None  # running or done
    retried: int = 0
    skipped: int = 0  # no longer failed or expired, or retried already
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BulkRetry:
        known = {f.name for f in fields(cls)} - {"started_at", "finished_at"}
        values = {name: data[name] for name in known if name in data}
        return cls(
            **values, started_at=parse_time(data.get("started_at")), finished_at=parse_time(data.get("finished_at"))
        )


@dataclass(frozen=True)
class Delivery:
    """One callback delivery, as it arrived."""

    received_at: datetime
    method: str
    api_id: str
    body: Any
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Delivery:
        moment = datetime.fromtimestamp(int(data["received_at"]) / 1000, tz=UTC)
        return cls(moment, data.get("method", ""), data.get("api_id", ""), data.get("body"), data)


@dataclass(frozen=True)
class Event:
    """One event of a request's timeline (`event`: submitted, sent, api_id, callback, completed,
    failed, expired, notification, retried). A field the event does not have, or the server did
    not know, is None; fields the server adds later are in `raw`."""

    at: datetime
    event: str
    attempt: int | None = None  # sent, notification
    outcome: str | None = None  # sent: accepted, retry, failed, unknown; notification: delivered, retry, ...
    upstream_status: int | None = None  # sent
    error: str | None = None  # sent, notification
    latency_ms: int | None = None  # sent
    api_id: str | None = None
    method: str | None = None  # callback
    verdict: str | None = None  # callback: matched, duplicate, late, early, refused
    signature: str | None = None  # callback: valid, invalid, unchecked
    size: int | None = None  # callback: bytes of its body
    reason: str | None = None  # failed, expired, a refused callback
    status_code: int | None = None  # notification
    next_at: datetime | None = None  # notification: when it is tried again
    idempotency_key: str | None = None  # submitted
    retry_of: str | None = None  # submitted
    retried_as: str | None = None  # retried
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        known = {f.name for f in fields(cls)} - {"raw", "at", "next_at"}
        values = {name: data[name] for name in known if name in data}
        at = parse_time(data["at"])
        assert at is not None
        return cls(at=at, next_at=parse_time(data.get("next_at")), **values, raw=data)


@dataclass(frozen=True)
class Timeline:
    """A request's events, oldest first; `dropped`: older ones the server no longer keeps.
    Iterating it iterates its events."""

    request_id: str
    events: list[Event]
    dropped: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Timeline:
        events = [Event.from_json(e) for e in data["events"]]
        return cls(data["request_id"], events, int(data.get("dropped", 0)), data)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)
