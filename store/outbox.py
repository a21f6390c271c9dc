"""The worker's side of a request's life: claim, send, settle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

from config import Settings
from store.connection import now_ms
from store.records import DRAINER_STALE_MS, new_id
from store.scripts import ScriptArg, Scripts

LEASE_MS = Settings.lease_seconds * 1000  # the setting's default, for callers that give none


@dataclass(frozen=True)
class Claimed:
    rid: str
    method: str
    path: str
    params: dict[str, Any]
    callback_method: str
    attempts: int
    timeout: int  # seconds to wait for the callback
    api_class: str  # the upstream rate-limit class it counts against
    claim_id: str = ""  # the claim that holds it: only its holder may send or settle it


@dataclass(frozen=True)
class Claim:
    items: list[Claimed]
    ring_id: str  # another drain job to enqueue, or ""
    leave: bool  # the outbox was empty and this drain job has left


class Outbox:
    """Requests waiting to be sent, and the drain jobs that send them."""

    def __init__(
        self,
        redis: Redis,
        result_ttl: int,
        max_drainers: int,
        lease_ms: int = LEASE_MS,
        drainer_stale_ms: int = DRAINER_STALE_MS,
        min_replicas: int = 0,
        direct: bool = False,
    ) -> None:
        """`direct`: scripts run without redis-py's retries, for callers that retry in time
        themselves (store/scripts.Scripts)."""
        self.redis = redis
        self.min_replicas = min_replicas
        self.lease_ms = lease_ms
        self.drainer_stale_ms = drainer_stale_ms
        self.result_ttl = result_ttl
        self.max_drainers = max_drainers
        self.scripts = Scripts(redis, direct)

    def claim(self, drainer_id: str, wanted: dict[str, int], in_flight: list[str], may_leave: bool) -> Claim:
        """Up to `wanted[class]` requests of each API class."""
        now, claim_id = now_ms(), new_id()
        asked = ",".join(f"{api_class}={n}" for api_class, n in wanted.items())
        answer = cast(
            "list[str]",
            self.scripts(
                "claim",
                drainer_id,
                asked,
                now,
                now + self.lease_ms,
                now - self.drainer_stale_ms,
                self.max_drainers,
                new_id(),
                "1" if may_leave else "0",
                claim_id,
                *in_flight,
            ),
        )
        if answer[0] == "leave":
            return Claim([], "", leave=True)
        items = [_claimed(json.loads(raw), claim_id) for raw in answer[2:]]
        return Claim(items, answer[1], leave=False)

    def hand_over(self, drainer_id: str) -> str:
        """Leave; answer the ring id of the drain job to enqueue in its place, or ""."""
        now = now_ms()
        return cast(str, self.scripts("hand_over", drainer_id, now, new_id(), now - self.drainer_stale_ms))

    def mark_sending(self, item: Claimed, *turn: ScriptArg) -> int:
        """The send marker: written (and with min_replicas replicated) before the request leaves,
        so a crash before it leaves the request provably unsent (it is sent again), and a crash
        after it never resends a POST. Only the claim that took `item` may mark it.
        1: marked sending (again for the same claim: still 1, so a retry after an outage is safe);
        0: no longer queued for this claim, or its callback_timeout passed before it was sent
        (it is expired now), nothing to send. With a rate-limit turn's arguments
        (RateLimiter.acquire passes them) also -N: the turn comes in N ms, nothing changed."""
        answer = self.scripts.replicated(
            self.min_replicas, "mark_sending", item.rid, item.claim_id, now_ms(), self.result_ttl, *turn
        )
        return cast(int, answer)

    def register_api_id(self, rid: str, api_id: str, timeout_s: int, claim_id: str = "") -> str:
        """The upstream accepted the request: it waits for its callback. `claim_id`: the claim
        that sent it, which settles it even if its `sending` mark was lost in a failover."""
        now = now_ms()
        return cast(
            str, self.scripts("register_api_id", rid, api_id, now, now + timeout_s * 1000, self.result_ttl, claim_id)
        )

    def completed(self, item: Claimed, body: Any) -> None:
        self._settle(item, "completed", body)

    def failed(self, item: Claimed, error: dict[str, Any]) -> None:
        self._settle(item, "failed", error)

    def retry(self, item: Claimed, error: dict[str, Any], delay_s: float) -> None:
        self._settle(item, "retry", error, due=now_ms() + int(delay_s * 1000))

    def unknown_outcome(self, item: Claimed, error: dict[str, Any]) -> None:
        """Maybe acted upstream: never resent; pending until its deadline."""
        self._settle(item, "unknown", error, deadline=now_ms() + item.timeout * 1000)

    def _settle(self, item: Claimed, verdict: str, value: Any, due: int = 0, deadline: int = 0) -> None:
        self.scripts(
            "settle",
            item.rid,
            verdict,
            json.dumps(value, separators=(",", ":")),
            now_ms(),
            self.result_ttl,
            due,
            deadline,
            item.claim_id,
        )


def _claimed(raw: dict[str, Any], claim_id: str) -> Claimed:
    return Claimed(
        raw["rid"],
        raw["method"],
        raw["path"],
        json.loads(raw["params"]),
        raw["callback_method"],
        raw["attempts"],
        raw["timeout"],
        raw["api_class"],
        claim_id,
    )
