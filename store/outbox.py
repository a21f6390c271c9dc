"""The worker's side of a request's life: claim, send, settle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

from config import Settings
from store import keys
from store.connection import OUTAGE, now_ms
from store.partitions import ONE, Partitions, on_each
from store.records import DRAINER_STALE_MS, api_id_pointer, api_id_ttl, new_id, register_ring
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
    leave: bool  # the outbox was empty and this drain job has left (every partition claimed from)


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
        *,
        partitions: Partitions = ONE,
    ) -> None:
        """`direct`: scripts run without redis-py's retries, for callers that retry in time
        themselves (store/scripts.Scripts)."""
        self.redis = redis
        self.partitions = partitions
        self.min_replicas = min_replicas
        self.lease_ms = lease_ms
        self.drainer_stale_ms = drainer_stale_ms
        self.result_ttl = result_ttl
        self.max_drainers = max_drainers
        self.scripts = Scripts(redis, direct)

    def claim(
        self,
        drainer_id: str,
        wanted: dict[str, int],
        in_flight: list[str],
        may_leave: bool,
        among: list[int] | None = None,
    ) -> Claim:
        """Up to `wanted[class]` requests of each API class, from the partitions `among` (default:
        every one), each asked for what the ones before did not give. The drain job is
        heart-beaten in each partition and the leases of its requests in flight (`in_flight`)
        renewed where they live: by the claim script with one partition, else by the read that
        finds which partitions have work (`_with_work`). One ring id serves the whole round, so
        a round rings at most one drain job more, however many partitions want one. Leaves only
        when every partition claimed from let it (a round that may leave and finds no work
        claims from every one). A partition that fails with an outage (its shard failing
        over, on a cluster) is passed over: what the others gave is sent meanwhile, not left
        leased until the sweep takes it back; the outage is raised only if nothing was claimed."""
        now, claim_id, ring_id = now_ms(), new_id(), new_id()
        among = list(range(self.partitions.count)) if among is None else among
        held: dict[int, list[str]] = {}
        for rid in in_flight:
            held.setdefault(self.partitions.of(rid), []).append(rid)
        partitioned = self.partitions.count > 1
        if partitioned:
            busy = self._with_work(drainer_id, among, held, now, wanted)
            held = {}
            if busy or not may_leave:
                among, may_leave = busy, False
        wanted = dict(wanted)
        items: list[Claimed] = []
        rung, left, failed = "", 0, None
        for p in among:
            if partitioned and not any(wanted.values()):
                break  # each partition of `among` is heart-beaten and its leases renewed already
            prefix = self.partitions.prefix(p)
            asked = ",".join(f"{api_class}={n}" for api_class, n in wanted.items())
            try:
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
                        ring_id,
                        "1" if may_leave and not items else "0",
                        claim_id,
                        *held.get(p, ()),
                        at=prefix,
                    ),
                )
            except OUTAGE as outage:
                failed = failed or outage
                continue
            if answer[0] == "leave":
                left += 1
                continue
            got = [_claimed(json.loads(raw), claim_id) for raw in answer[2:]]
            for item in got:
                wanted[item.api_class] -= 1
            items += got
            if answer[1] and not rung:
                rung = answer[1]
                register_ring(self.redis, self.partitions, rung, prefix)
        if failed is not None and not items:
            raise failed
        if left == len(among) and among:
            return Claim([], "", leave=True)
        return Claim(items, rung, leave=False)

    def _with_work(
        self, drainer_id: str, among: list[int], held: dict[int, list[str]], now: int, wanted: dict[str, int]
    ) -> list[int]:
        """The partitions of `among` with something this round wants (queued in a class it has
        room for, or due to be sent again), found in one pipelined read that also does what a
        claim does besides claiming: heart-beat this drain job in each partition and renew the
        leases of its requests there. A round then runs the claim script only where there is
        work, the fullest partitions first, and none once the batch is filled: with 24
        partitions, a few scripts rather than 24 (the most of a partitioned store's Redis CPU,
        `bench cluster`). A round that may leave and finds no work anywhere claims from every
        partition, in the script that also checks the outbox is empty. On an outage (one shard failing over)
        every partition of `among` is tried, each by itself."""
        classes = keys.API_CLASSES
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for p in among:
                    prefix = self.partitions.prefix(p)
                    for api_class in classes:
                        pipe.llen(keys.at(prefix, keys.outbox(api_class)))
                    pipe.zrangebyscore(keys.at(prefix, keys.RETRY), "-inf", now, start=0, num=1)
                    pipe.zadd(keys.at(prefix, keys.DRAINERS), {drainer_id: now})
                    if held.get(p):
                        pipe.zadd(keys.at(prefix, keys.LEASES), dict.fromkeys(held[p], now + self.lease_ms), xx=True)
                answers = pipe.execute()
        except OUTAGE:
            return among
        queued: dict[int, int] = {}
        at = 0
        for p in among:
            lengths, due = answers[at : at + len(classes)], answers[at + len(classes)]
            room = sum(n for api_class, n in zip(classes, lengths, strict=True) if wanted.get(api_class))
            if room or (due and any(wanted.values())):
                queued[p] = room + len(due)
            at += len(classes) + 2 + (1 if held.get(p) else 0)
        return sorted(queued, key=lambda p: -queued[p])  # the fullest first: fewer scripts fill a batch

    def hand_over(self, drainer_id: str) -> str:
        """Leave every partition; answer the ring id of the drain job to enqueue in its place, or
        "" (one for all: it claims from every partition). A partition that fails with an outage
        (its shard failing over) is passed over: this job's registration there goes stale, and
        the sweep rings a drain job for whatever waits there; the outage is raised only if every
        partition failed."""
        now = now_ms()
        args = (drainer_id, now, new_id(), now - self.drainer_stale_ms)
        answered, _ = on_each(self.partitions.prefixes(), lambda at: self.scripts("hand_over", *args, at=at))
        rung = next(((prefix, cast(str, answer)) for prefix, answer in answered if answer), None)
        if rung is None:
            return ""
        register_ring(self.redis, self.partitions, rung[1], rung[0])
        return rung[1]

    def mark_sending(self, item: Claimed, *turn: ScriptArg) -> int:
        """The send marker: written (and with min_replicas replicated) before the request leaves,
        so a crash before it leaves the request provably unsent (it is sent again), and a crash
        after it never resends a POST. Only the claim that took `item` may mark it.
        1: marked sending (again for the same claim: still 1, so a retry after an outage is safe);
        0: no longer queued for this claim, or its callback_timeout passed before it was sent
        (it is expired now), nothing to send. With a rate-limit turn's arguments
        (RateLimiter.acquire passes them) also -N: the turn comes in N ms, nothing changed."""
        answer = self.scripts.replicated(
            self.min_replicas,
            "mark_sending",
            item.rid,
            item.claim_id,
            now_ms(),
            self.result_ttl,
            *turn,
            at=self.partitions.at(item.rid),
        )
        return cast(int, answer)

    def register_api_id(self, rid: str, api_id: str, timeout_s: int, claim_id: str = "") -> str:
        """The upstream accepted the request: it waits for its callback. `claim_id`: the claim
        that sent it, which settles it even if its `sending` mark was lost in a failover.
        With partitions, the api_id's home pointer is written first (store/records.py
        `rid_for_api_id` reads it): a script that fails after it leaves a pointer its readers
        ignore, never an indexed api_id without one."""
        now, at = now_ms(), self.partitions.at(rid)
        early: list[str] = []
        if self.partitions.count > 1:
            early = self._point(rid, api_id, api_id_ttl(self.result_ttl, timeout_s))
        args = (rid, api_id, now, now + timeout_s * 1000, self.result_ttl, claim_id)
        status = cast(str, self.scripts("register_api_id", *args, at=at))
        if early:  # applied with the request's own early callbacks: off the api_id's partition
            self.redis.ltrim(keys.at(self._home(api_id), keys.orphan(api_id)), len(early), -1)
        return status

    def _home(self, api_id: str) -> str:
        return self.partitions.prefix(self.partitions.home(api_id))

    def _point(self, rid: str, api_id: str, ttl: int) -> list[str]:
        """Write the api_id's home pointer, and move the callbacks that came for it early
        without a rid (kept in the api_id's own partition, store/deliveries.py) to the
        request's partition, where register_api_id applies its early callbacks; answers them.
        A callback arriving meanwhile finds the pointer, or is moved by the next attempt."""
        home = self._home(api_id)
        at = self.partitions.at(rid)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(api_id_pointer(self.partitions, api_id), rid, ex=ttl)
            if home != at:
                pipe.lrange(keys.at(home, keys.orphan(api_id)), 0, -1)
            answers = pipe.execute()
        early = cast("list[str]", answers[1]) if home != at else []
        if early:
            okey = keys.at(at, keys.orphan(api_id))
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(okey, *early)
                pipe.expire(okey, ttl)
                pipe.execute()
        return early

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
            at=self.partitions.at(item.rid),
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
