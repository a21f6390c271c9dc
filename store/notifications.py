"""Notifications to the application: which are due, who is sending them, what each attempt did.

A request's notification is queued by the same script that gives it its final
status (lua/prelude.lua `queue_notification`), so a crash between the two cannot
lose it; a notifier leases what it claims by pushing its due time forward, so
one that dies mid-send leaves it to be sent again with the same webhook-id.
Notifications are queued per host (host:port), so a claim takes hosts in turn
and skips one without room at the cost of one look, whatever it has queued.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

from store import keys
from store.connection import now_ms
from store.records import RequestRecord, webhook_id
from store.scripts import Scripts

NOTIFY_STATUSES = ("pending", "delivered", "failed")  # of a request's latest notification
ATTEMPT_OUTCOMES = ("delivered", "retry", "failed", "refused")  # of one attempt (lua/notify_settle.lua)
KEEP_ATTEMPTS = 100  # newest attempts kept per request
SPARE_HOSTS = 16  # hosts a claim may find with nothing due after all (lua/notify_claim.lua)


@dataclass(frozen=True)
class DueNotification:
    rid: str
    event: str
    attempts: int  # attempts of this event so far
    host: str  # host:port, the unit of per-host concurrency
    record: RequestRecord

    @property
    def webhook_id(self) -> str:
        return webhook_id(self.rid, self.event)


class Notifications:
    def __init__(self, redis: Redis, lease_ms: int) -> None:
        self.redis = redis
        self.lease_ms = lease_ms
        self.scripts = Scripts(redis)

    def claim(self, wanted: int, room: dict[str, int], host_room: int) -> list[DueNotification]:
        """Up to `wanted` due notifications; per host at most `room[host]` (else `host_room`),
        hosts taken in turn, so one host's backlog cannot keep the others waiting."""
        now = now_ms()
        pairs = [v for host, n in room.items() for v in (host, n)]
        rows = cast(
            "list[list[Any]]",
            self.scripts("notify_claim", now, now + self.lease_ms, wanted, host_room, SPARE_HOSTS, *pairs),
        )
        return [
            DueNotification(
                rid, event, int(attempts or 0), host, RequestRecord(dict(zip(fields[::2], fields[1::2], strict=True)))
            )
            for rid, event, attempts, host, *fields in rows
        ]

    def settle(
        self, due: DueNotification, outcome: str, attempt: dict[str, Any], error: str = "", next_due_ms: int = 0
    ) -> bool:
        """Record one attempt: delivered, retry (at `next_due_ms`), failed or refused.
        Answers False when a newer event superseded this one (only the log changed)."""
        entry = json.dumps(attempt, separators=(",", ":"))
        return bool(
            self.scripts(
                "notify_settle", due.rid, due.event, outcome, now_ms(), next_due_ms, entry, error, KEEP_ATTEMPTS
            )
        )

    def again(self, rid: str) -> str:
        """Queue a finished request's notification as a new event: queued, not_finished or no_url."""
        return cast(str, self.scripts("notify_again", rid, now_ms()))

    def attempts(self, rid: str) -> list[dict[str, Any]]:
        return [json.loads(a) for a in self.redis.lrange(keys.notifications(rid), 0, -1)]
