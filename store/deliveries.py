"""The web side's store for callback deliveries: keep, then match."""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple, cast

from redis import Redis

from config import Settings
from store import keys
from store.connection import now_ms
from store.scripts import NotReplicated, Scripts

OUTCOMES = ("matched", "early", "duplicate", "late")  # what match_callback.lua answers
SPOOLED = "spooled"  # the webhook's answer for a delivery kept in the local spool while Redis was away


class Matched(NamedTuple):
    """What match_callback.lua answers: the outcome, and the tenant of the request the callback
    URL named ('' for none), whose figures over time the webhook's latency goes into."""

    outcome: str
    tenant: str | None  # None: not known (a delivery kept in the spool)


class Deliveries:
    """Callback deliveries, matched to their request in one atomic step."""

    def __init__(
        self,
        redis: Redis,
        result_ttl: int,
        orphan_ttl: int,
        replay_window_s: int = Settings.replay_window,
        min_replicas: int = 0,
    ) -> None:
        self.redis = redis
        self.min_replicas = min_replicas
        self.result_ttl = result_ttl
        self.orphan_ttl = orphan_ttl
        self.replay_window_ms = replay_window_s * 1000
        self.scripts = Scripts(redis)

    def refused(self, reason: str, rid: str) -> None:
        """Count a callback refused before it could be read or kept (`oversized`), for all
        tenants and the tenant whose request `rid` names, as a quarantined one is."""
        self.scripts("refused", reason, rid, now_ms())

    def store(
        self, rid: str, api_id: str, body: dict[str, Any], method: str, nonce: str = "", received_at: int = 0
    ) -> str:
        """Keep one delivery and answer its outcome: matched, early, duplicate or late (`match`)."""
        return self.match(rid, api_id, body, method, nonce, received_at).outcome

    def match(
        self, rid: str, api_id: str, body: dict[str, Any], method: str, nonce: str = "", received_at: int = 0
    ) -> Matched:
        """Keep one delivery and answer its outcome (matched, early, duplicate or late) with the
        tenant of the request `rid` names.
        `nonce`: the signature nonce of a signed delivery, remembered against replays.
        `received_at` (ms): when it arrived, for one replayed from the spool.
        With `min_replicas`, raises NotReplicated until that many replicas have it. One attempt,
        no retries: the webhook holds on through an outage itself (receiver/callbacks.py)."""
        now = received_at or now_ms()
        canonical = json.dumps(body, separators=(",", ":"), sort_keys=True)
        digest = short_digest(f"{api_id}\n{canonical}")
        delivery = json.dumps(
            {"received_at": now, "method": method, "api_id": api_id, "body": body}, separators=(",", ":")
        )
        nonce_key = keys.nonce(short_digest(nonce)) if nonce else ""
        args = (
            rid,
            api_id,
            delivery,
            canonical,
            digest,
            now,
            self.result_ttl,
            self.orphan_ttl,
            nonce_key,
            self.replay_window_ms,
            method,
        )
        if self.min_replicas:
            try:
                answer = self.scripts.replicated(self.min_replicas, "match_callback", *args)
            except NotReplicated as exc:  # its result: the outcome, as store() answers it
                exc.result = cast("list[str]", exc.result)[0]
                raise
        else:
            answer = self.scripts.once("match_callback", *args)  # the webhook's hot path
        return Matched(*cast("list[str]", answer))


def short_digest(text: str) -> str:
    """128 bits of SHA-256 in hex: as safe against collisions for telling deliveries and
    nonces apart as the whole, in half the bytes of every key and record that holds one."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]
