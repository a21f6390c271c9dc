"""Retrying failed and expired requests: one at a time (lua/retry.lua), or every match of a
filter at once, as a bulk retry the sweep works through (lua/bulk_retry.lua)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

from store import keys
from store.connection import now_ms
from store.records import DRAINER_STALE_MS, Filter, iso, new_id, submission_time
from store.scripts import Scripts

RETRYABLE = ("failed", "expired")
MAX_BULK = 10_000  # requests one bulk retry may take: a larger filter is refused, to be narrowed
STEP = 100  # retries in one script run: Redis does nothing else meanwhile


@dataclass(frozen=True)
class Retried:
    outcome: str  # 'created', or why not: 'gone', 'retried', 'status'
    value: str  # the new request's id ('created'), the retry's ('retried'), the status ('status')
    ring_id: str  # a drain job to enqueue, or ""


class Retries:
    def __init__(self, redis: Redis, result_ttl: int, drainer_stale_ms: int = DRAINER_STALE_MS) -> None:
        self.redis = redis
        self.result_ttl = result_ttl
        self.drainer_stale_ms = drainer_stale_ms
        self.scripts = Scripts(redis)

    def retry(self, rid: str, tenant: str) -> Retried:
        """Retry the tenant's request `rid` as a new request of `tenant`, once."""
        args = (rid, new_id(), tenant, submission_time(), new_id(), now_ms() - self.drainer_stale_ms)
        outcome, value = cast("list[str]", self.scripts("retry", *args))
        if outcome == "created":
            return Retried(outcome, args[1], value)
        return Retried(outcome, value, "")

    def matching(self, tenant: str, filt: Filter) -> tuple[int, list[str]]:
        """How many of the tenant's requests a bulk retry with this filter takes (its status, or
        both failed and expired), and their ids, oldest first, unless they are more than MAX_BULK."""
        since, until = filt.bounds()
        since, until = since or "-inf", until or "+inf"
        indexes = [
            keys.tenant_path_requests(tenant, filt.path, status) if filt.path else keys.tenant_requests(tenant, status)
            for status in ((filt.status,) if filt.status else RETRYABLE)
        ]
        with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zcount(index, since, until)
            total = sum(cast("list[int]", pipe.execute()))
        if total > MAX_BULK:
            return total, []
        with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zrangebyscore(index, since, until, withscores=True)
            listed = cast("list[list[tuple[str, float]]]", pipe.execute())
        rows = sorted((row for rows in listed for row in rows), key=lambda row: row[1])
        return len(rows), [rid for rid, _ in rows]

    def start(self, tenant: str, rids: list[str]) -> str:
        """A bulk retry of these ids, kept in Redis for the sweep to work through (workers,
        resumable); its progress is readable for RESULT_TTL."""
        bulk_id, now = new_id(), now_ms()
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.bulk_retry(bulk_id),
                mapping={
                    "tenant": tenant,
                    "status": "running",
                    "count": len(rids),
                    "retried": 0,
                    "skipped": 0,
                    "started_at": now,
                },
            )
            pipe.expire(keys.bulk_retry(bulk_id), self.result_ttl)
            for at in range(0, len(rids), 1000):
                pipe.rpush(keys.bulk_retry_rids(bulk_id), *rids[at : at + 1000])
            pipe.expire(keys.bulk_retry_rids(bulk_id), self.result_ttl)
            pipe.zadd(keys.BULK_RETRIES, {bulk_id: now})
            pipe.execute()
        return bulk_id

    def progress(self, bulk_id: str, owners: tuple[str, ...]) -> dict[str, Any] | None:
        """A bulk retry as GET /v1/requests/retry/{bulk_id} answers it, if one of `owners` (a tenant
        and its aliases: the key's id before it was named) started it (None: another's, or none)."""
        f = cast("dict[str, str]", self.redis.hgetall(keys.bulk_retry(bulk_id)))
        if f.get("tenant") not in owners:
            return None
        return {
            "bulk_id": bulk_id,
            "status": f["status"],
            "count": int(f["count"]),
            "retried": int(f.get("retried", 0)),
            "skipped": int(f.get("skipped", 0)),
            "started_at": iso(f.get("started_at")),
            "finished_at": iso(f.get("finished_at")),
        }

    def work(self, budget: int) -> list[str]:
        """Up to `budget` retries of the running bulk retries, oldest bulk first; the drain jobs to enqueue."""
        rings = []
        for bulk_id in cast("list[str]", self.redis.zrange(keys.BULK_RETRIES, 0, -1)):
            left = 1
            while left and budget > 0:
                step = min(STEP, budget)
                new_rids = [new_id() for _ in range(step)]
                stale_before = now_ms() - self.drainer_stale_ms
                ring_id, left = cast(
                    "list[Any]",
                    self.scripts("bulk_retry", bulk_id, submission_time(), new_id(), stale_before, *new_rids),
                )
                budget -= step
                if ring_id:
                    rings.append(ring_id)
            if budget <= 0:
                break
        return rings
