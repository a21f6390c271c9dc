"""The periodic sweep over every request's timers (see lua/sweep.lua)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

from store import keys
from store.connection import now_ms
from store.partitions import ONE, Partitions, on_each
from store.records import DRAINER_STALE_MS, new_id, register_ring
from store.scripts import Scripts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    expired: int
    recovered: int
    purged: int
    ring_id: str


class Sweeper:
    def __init__(
        self,
        redis: Redis,
        result_ttl: int,
        batch: int = 1000,
        drainer_stale_ms: int = DRAINER_STALE_MS,
        *,
        partitions: Partitions = ONE,
    ) -> None:
        self.redis = redis
        self.partitions = partitions
        self.drainer_stale_ms = drainer_stale_ms
        self.result_ttl = result_ttl
        self.batch = batch
        self.scripts = Scripts(redis)

    def try_lock(self, holder: str, seconds: float) -> bool:
        """One sweep at a time across every worker: whoever holds the lock sweeps."""
        return bool(self.redis.set(keys.SWEEP_LOCK, holder, nx=True, px=int(seconds * 1000)))

    def sweep(self, now: int | None = None) -> SweepResult:
        """One pass over every timer, as of `now` (ms; default: the clock): one script call per
        partition, each with its own timers. One ring id serves them all: a drain job claims from
        every partition, so one is rung however many partitions want one. A partition that fails
        with an outage (its shard failing over, on a cluster) is passed over, logged, so that the
        others' timers keep running; the outage is raised only when every partition failed."""
        now = now_ms() if now is None else now
        args = (now, self.batch, self.result_ttl, new_id(), now - self.drainer_stale_ms)
        answered, failed = on_each(self.partitions.prefixes(), lambda at: self.scripts("sweep", *args, at=at))
        expired = recovered = purged = 0
        rung = ""
        for prefix, answer in answered:
            e, r, p, ring_id = cast("list[Any]", answer)
            expired, recovered, purged = expired + e, recovered + r, purged + p
            if ring_id and not rung:
                rung = ring_id
                register_ring(self.redis, self.partitions, rung, prefix)
        if failed:
            log.warning(
                "sweep passed over %d partitions: Redis unavailable (%s)", len(failed), type(failed[0]).__name__
            )
        return SweepResult(expired, recovered, purged, rung)

    def mark_ran(self, at_ms: int) -> None:
        """The sweep ran at `at_ms` (Redis's clock: every process reads its age, see health.py)."""
        self.redis.set(keys.SWEEP_LAST, at_ms)
