"""Retrying failed and expired requests: one at a time (lua/retry.lua), or every match of a
filter at once, as a bulk retry the sweep works through.

A retry's new request is made in its original's partition (store/partitions.py), by the one
script that links both. A bulk retry's record and list of ids live in the partition of its
id (`home`); its matches come from every partition. The sweep retries each listed request
with one script call in that request's partition, then counts them in the bulk's
(lua/bulk_retry.lua). Each new id is chosen before the retry and kept until counted
(keys.bulk_retry_plan): a step cut off in between tries the same ids again, and retry.lua,
which retries a request once, answers with the id it made, so each request is counted once,
as retried or skipped, whatever was cut off where."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

from store import keys
from store.connection import now_ms
from store.partitions import ONE, Partitions
from store.records import DRAINER_STALE_MS, Filter, iso, new_id, submission_time
from store.scripts import Scripts

RETRYABLE = ("failed", "expired")
MAX_BULK = 10_000  # requests one bulk retry may take: a larger filter is refused, to be narrowed
STEP = 100  # retries a bulk retry's step takes from its list, then counts in one script run


@dataclass(frozen=True)
class Retried:
    outcome: str  # 'created', or why not: 'gone', 'retried', 'status'
    value: str  # the new request's id ('created'), the retry's ('retried'), the status ('status')
    ring_id: str  # a drain job to enqueue, or ""


class Retries:
    def __init__(
        self,
        redis: Redis,
        result_ttl: int,
        drainer_stale_ms: int = DRAINER_STALE_MS,
        partitions: Partitions = ONE,
    ) -> None:
        self.redis = redis
        self.result_ttl = result_ttl
        self.drainer_stale_ms = drainer_stale_ms
        self.partitions = partitions
        self.scripts = Scripts(redis)

    def retry(self, rid: str, tenant: str) -> Retried:
        """Retry the tenant's request `rid` as a new request of `tenant`, once."""
        retried = self._retry(rid, self._new_rid(rid), tenant, new_id())
        return retried if retried.outcome == "created" else Retried(retried.outcome, retried.value, "")

    def _new_rid(self, rid: str) -> str:
        """An id for the retry of `rid`, in its partition."""
        return self.partitions.new_id(self.partitions.of(rid))

    def _retry(self, rid: str, new_rid: str, tenant: str, ring_id: str) -> Retried:
        """Run retry.lua in `rid`'s partition: 'created' (value: new_rid; ring_id: the drain job
        to enqueue, or ""), or why not, with the retry's id ('retried') or the status ('status')."""
        args = (rid, new_rid, tenant, submission_time(), ring_id, now_ms() - self.drainer_stale_ms)
        outcome, value = cast("list[str]", self.scripts("retry", *args, at=self.partitions.at(rid)))
        if outcome == "created":
            return Retried(outcome, new_rid, value)
        return Retried(outcome, value, "")

    def matching(self, tenant: str, filt: Filter) -> tuple[int, list[str]]:
        """How many of the tenant's requests a bulk retry with this filter takes (its status, or
        both failed and expired), and their ids, oldest first, unless they are more than MAX_BULK.
        Read from every partition's indexes."""
        since, until = filt.bounds()
        since, until = since or "-inf", until or "+inf"
        names = [
            keys.tenant_path_requests(tenant, filt.path, status) if filt.path else keys.tenant_requests(tenant, status)
            for status in ((filt.status,) if filt.status else RETRYABLE)
        ]
        indexes = [keys.at(prefix, name) for prefix in self.partitions.prefixes() for name in names]
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

    def _home(self, bulk_id: str) -> str:
        """The prefix of the partition a bulk retry's keys live in."""
        return self.partitions.prefix(self.partitions.home(bulk_id))

    def start(self, tenant: str, rids: list[str]) -> str:
        """A bulk retry of these ids, kept in Redis for the sweep to work through (workers,
        resumable); its progress is readable for RESULT_TTL."""
        bulk_id, now = new_id(), now_ms()
        at = self._home(bulk_id)
        record, listed = keys.at(at, keys.bulk_retry(bulk_id)), keys.at(at, keys.bulk_retry_rids(bulk_id))
        with self.redis.pipeline(transaction=True) as pipe:  # every key in the bulk's partition
            pipe.hset(
                record,
                mapping={
                    "tenant": tenant,
                    "status": "running",
                    "count": len(rids),
                    "retried": 0,
                    "skipped": 0,
                    "started_at": now,
                },
            )
            pipe.expire(record, self.result_ttl)
            for i in range(0, len(rids), 1000):
                pipe.rpush(listed, *rids[i : i + 1000])
            pipe.expire(listed, self.result_ttl)
            pipe.zadd(keys.at(at, keys.BULK_RETRIES), {bulk_id: now})
            pipe.execute()
        return bulk_id

    def progress(self, bulk_id: str, owners: tuple[str, ...]) -> dict[str, Any] | None:
        """A bulk retry as GET /v1/requests/retry/{bulk_id} answers it, if one of `owners` (a tenant
        and its aliases: the key's id before it was named) started it (None: another's, or none)."""
        f = cast("dict[str, str]", self.redis.hgetall(keys.at(self._home(bulk_id), keys.bulk_retry(bulk_id))))
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
        """Up to `budget` retries of the running bulk retries, oldest bulk first (of every
        partition); the drain jobs to enqueue."""
        with self.redis.pipeline(transaction=False) as pipe:
            for prefix in self.partitions.prefixes():
                pipe.zrange(keys.at(prefix, keys.BULK_RETRIES), 0, -1, withscores=True)
            listed = cast("list[list[tuple[str, float]]]", pipe.execute())
        running = sorted((score, bulk_id) for rows in listed for bulk_id, score in rows)
        rings: list[str] = []
        for _, bulk_id in running:
            left = 1
            while left and budget > 0:
                step = min(STEP, budget)
                left = self._step(bulk_id, step, rings)
                budget -= step
            if budget <= 0:
                break
        return rings

    def _step(self, bulk_id: str, step: int, rings: list[str]) -> int:
        """Retry the next `step` ids of a bulk retry, each in its own partition, then count them
        in the bulk's; the ids it has still to retry. A drain job to enqueue goes in `rings`."""
        at = self._home(bulk_id)
        plan = keys.at(at, keys.bulk_retry_plan(bulk_id))
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(keys.at(at, keys.bulk_retry(bulk_id)), "tenant")
            pipe.lrange(keys.at(at, keys.bulk_retry_rids(bulk_id)), 0, step - 1)
            tenant, rids = cast("tuple[str | None, list[str]]", pipe.execute())
        verdicts: list[str] = []
        if tenant is not None and rids:
            with self.redis.pipeline(transaction=True) as pipe:
                for rid in rids:
                    pipe.hsetnx(plan, rid, self._new_rid(rid))
                pipe.expire(plan, self.result_ttl)
                pipe.hmget(plan, rids)
                planned = cast("list[str]", pipe.execute()[-1])
            ring_id = new_id()
            for rid, new_rid in zip(rids, planned, strict=True):
                retried = self._retry(rid, new_rid, tenant, ring_id)
                mine = retried.outcome == "created" or (retried.outcome == "retried" and retried.value == new_rid)
                verdicts += [rid, "retried" if mine else "skipped"]
                if retried.ring_id and retried.ring_id not in rings:
                    rings.append(retried.ring_id)
        return cast(int, self.scripts("bulk_retry", bulk_id, submission_time(), *verdicts, at=at))
