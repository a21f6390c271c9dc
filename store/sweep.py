"""The periodic sweep over every request's timers (see lua/sweep.lua)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

from store import keys
from store.connection import now_ms
from store.records import DRAINER_STALE_MS, new_id
from store.scripts import Scripts


@dataclass(frozen=True)
class SweepResult:
    expired: int
    recovered: int
    purged: int
    ring_id: str


class Sweeper:
    def __init__(
        self, redis: Redis, result_ttl: int, batch: int = 1000, drainer_stale_ms: int = DRAINER_STALE_MS
    ) -> None:
        self.redis = redis
        self.drainer_stale_ms = drainer_stale_ms
        self.result_ttl = result_ttl
        self.batch = batch
        self.scripts = Scripts(redis)

    def try_lock(self, holder: str, seconds: float) -> bool:
        """One sweep at a time across every worker: whoever holds the lock sweeps."""
        return bool(self.redis.set(keys.SWEEP_LOCK, holder, nx=True, px=int(seconds * 1000)))

    def sweep(self, now: int | None = None) -> SweepResult:
        """One pass over every timer, as of `now` (ms; default: the clock)."""
        now = now_ms() if now is None else now
        expired, recovered, purged, ring_id = cast(
            "list[Any]", self.scripts("sweep", now, self.batch, self.result_ttl, new_id(), now - self.drainer_stale_ms)
        )
        return SweepResult(expired, recovered, purged, ring_id)

    def mark_ran(self, at_ms: int) -> None:
        """The sweep ran at `at_ms` (Redis's clock: every process reads its age, see health.py)."""
        self.redis.set(keys.SWEEP_LAST, at_ms)
