"""The web side's store for callback deliveries: keep, then match."""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple, cast

from redis import Redis

from config import Settings
from store import keys
from store.connection import now_ms
from store.partitions import ONE, Partitions
from store.records import api_id_pointer, api_id_ttl
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
        *,
        partitions: Partitions = ONE,
        max_callback_timeout: int = Settings.max_callback_timeout,
    ) -> None:
        self.redis = redis
        self.partitions = partitions
        self.pointer_ttl = api_id_ttl(result_ttl, max_callback_timeout)
        self.min_replicas = min_replicas
        self.result_ttl = result_ttl
        self.orphan_ttl = orphan_ttl
        self.replay_window_ms = replay_window_s * 1000
        self.scripts = Scripts(redis)

    def refused(self, reason: str, rid: str) -> None:
        """Count a callback refused before it could be read or kept (`oversized`), for all
        tenants and the tenant whose request `rid` names, as a quarantined one is."""
        self.scripts("refused", reason, rid, now_ms(), at=self.partitions.at(rid) if rid else self.partitions.prefix(0))

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
        at, rid, elsewhere = self._where(rid, api_id)

        def run(at: str, rid: str, elsewhere: str) -> list[str]:
            nonce_key = keys.at(at, keys.nonce(short_digest(nonce))) if nonce else ""
            args = (rid, api_id, delivery, canonical, digest, now, self.result_ttl, self.orphan_ttl)
            return self._run((*args, nonce_key, self.replay_window_ms, method, "1" if elsewhere else ""), at)

        answer = run(at, rid, elsewhere)
        if answer[0] == "elsewhere":  # the URL's rid names no request, or none was given; the pointer names one
            answer = [run(self.partitions.at(answer[1]) if answer[1] else elsewhere, "", "")[0], ""]
        return Matched(*answer)

    def _run(self, args: tuple[str | int, ...], at: str) -> list[str]:
        if self.min_replicas:
            try:
                return cast("list[str]", self.scripts.replicated(self.min_replicas, "match_callback", *args, at=at))
            except NotReplicated as exc:  # its result: the outcome, as store() answers it
                exc.result = cast("list[str]", exc.result)[0]
                raise
        return cast("list[str]", self.scripts.once("match_callback", *args, at=at))  # the webhook's hot path

    def _where(self, rid: str, api_id: str) -> tuple[str, str, str]:
        """The partition to match a delivery in, the rid to match it by there, and the
        partition to try next if that rid names no request ("" for none). The URL's rid names
        the partition; without one the api_id's home pointer does (the script then finds the
        request by its api_id); with neither (an early callback without a rid) the api_id's own
        partition keeps it, where register_api_id looks for it, unless the pointer was written
        since (the script there then answers the request it names: the third value is that
        partition itself, for the script to look). A callback naming a rid and an
        api_id writes the api_id's home pointer first (unless one is there): its match may
        index the api_id."""
        if self.partitions.count == 1:
            return keys.PREFIX, rid, ""
        if not api_id:
            return (self.partitions.at(rid) if rid else self.partitions.prefix(0)), rid, ""
        pointer = api_id_pointer(self.partitions, api_id)
        if not rid:
            known = cast("str | None", self.redis.get(pointer))
            if known:
                return self.partitions.at(known), "", ""
            home = self.partitions.prefix(self.partitions.home(api_id))
            return home, "", home
        with self.redis.pipeline(transaction=False) as pipe:  # one round trip
            pipe.set(pointer, rid, nx=True, ex=self.pointer_ttl)
            pipe.expire(pointer, self.pointer_ttl)  # a late callback keeps its request longer
            pipe.get(pointer)
            known = pipe.execute()[2]
        at = self.partitions.at(rid)
        other = self.partitions.at(known) if known and known != rid else at
        return at, rid, "" if other == at else other


def short_digest(text: str) -> str:
    """128 bits of SHA-256 in hex: as safe against collisions for telling deliveries and
    nonces apart as the whole, in half the bytes of every key and record that holds one."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]
