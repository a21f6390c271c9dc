"""Notifications to the application: which are due, who is sending them, what each attempt did.

A request's notification is queued by the same script that gives it its final
status (lua/prelude.lua `queue_notification`), so a crash between the two cannot
lose it; a notifier leases what it claims by pushing its due time forward, so
one that dies mid-send leaves it to be sent again with the same webhook-id.
Notifications are queued per host (host:port), so a claim takes hosts in turn
and skips one without room at the cost of one look, whatever it has queued.

A request's notification is queued, leased and settled in the request's partition
(store/partitions.py), each partition with its own host queues. A claim looks at every
partition with something due, starting one further each time, so that none is always served
first; a host's room is the notifier's across all of them, so NOTIFY_HOST_CONCURRENCY holds
whichever partitions its notifications are in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

from store import keys
from store.connection import OUTAGE, now_ms
from store.partitions import ONE, Partitions
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
    def __init__(self, redis: Redis, lease_ms: int, partitions: Partitions = ONE) -> None:
        self.redis = redis
        self.lease_ms = lease_ms
        self.partitions = partitions
        self.scripts = Scripts(redis)
        self._first = 0  # the partition the next claim looks at first

    def claim(self, wanted: int, room: dict[str, int], host_room: int) -> list[DueNotification]:
        """Up to `wanted` due notifications; per host at most `room[host]` (else `host_room`),
        hosts taken in turn, so one host's backlog cannot keep the others waiting. Partitions
        are looked at in turn from one further than the last claim's first, each given what
        room the partitions before it left. A partition that fails with an outage (its shard
        failing over, on a cluster) is passed over: then every partition is looked at, as the
        one round trip that tells which have something due fails too; the outage is raised
        only when nothing was claimed."""
        count = self.partitions.count
        first, self._first = self._first, (self._first + 1) % count
        failed: BaseException | None = None
        try:
            ready = self._due() if count > 1 else {0}
        except OUTAGE as outage:
            failed, ready = outage, set(range(count))
        room = dict(room)
        claimed: list[DueNotification] = []
        for p in [(first + i) % count for i in range(count)]:
            if len(claimed) >= wanted:
                break
            if p not in ready:
                continue
            try:
                taken = self._claim(self.partitions.prefix(p), wanted - len(claimed), room, host_room)
            except OUTAGE as outage:
                failed = failed or outage
                continue
            for due in taken:
                room[due.host] = room.get(due.host, host_room) - 1
            claimed += taken
        if failed is not None and not claimed:
            raise failed
        return claimed

    def _due(self) -> set[int]:
        """The partitions with a host whose queue may have something due (or notifications
        queued before host queues), read in one round trip: an idle notifier costs that, not a
        script call per partition, every poll."""
        now = now_ms()
        with self.redis.pipeline(transaction=False) as pipe:
            for prefix in self.partitions.prefixes():
                pipe.zrangebyscore(keys.at(prefix, keys.NOTIFY_HOSTS), "-inf", now, start=0, num=1)
                pipe.exists(keys.at(prefix, keys.NOTIFY_DUE_UNSPLIT))
            found = pipe.execute()
        return {p for p in range(self.partitions.count) if found[2 * p] or found[2 * p + 1]}

    def _claim(self, at: str, wanted: int, room: dict[str, int], host_room: int) -> list[DueNotification]:
        now = now_ms()
        pairs = [v for host, n in room.items() for v in (host, n)]
        rows = cast(
            "list[list[Any]]",
            self.scripts("notify_claim", now, now + self.lease_ms, wanted, host_room, SPARE_HOSTS, *pairs, at=at),
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
                "notify_settle",
                due.rid,
                due.event,
                outcome,
                now_ms(),
                next_due_ms,
                entry,
                error,
                KEEP_ATTEMPTS,
                at=self.partitions.at(due.rid),
            )
        )

    def again(self, rid: str) -> str:
        """Queue a finished request's notification as a new event: queued, not_finished or no_url."""
        return cast(str, self.scripts("notify_again", rid, now_ms(), at=self.partitions.at(rid)))

    def attempts(self, rid: str) -> list[dict[str, Any]]:
        name = keys.at(self.partitions.at(rid), keys.notifications(rid))
        return [json.loads(a) for a in self.redis.lrange(name, 0, -1)]
