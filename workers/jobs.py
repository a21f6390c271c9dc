"""RQ jobs: drain the outbox, sending its requests concurrently."""

from __future__ import annotations

import logging
import queue
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

import logs
from config import Settings
from store import keys
from store.drain_jobs import enqueue_drain_job
from store.outbox import Claim, Claimed

if TYPE_CHECKING:  # imported by the job when it runs (see drain)
    from workers.context import WorkerContext

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.05
HEARTBEAT_S = 1.0
# A drain job claims again once this share of its send slots is free (or the outbox ran dry and
# IDLE_POLL_S passed), not for every slot that frees: one claim script per batch, not per send.
CLAIM_BATCH_SHARE = 4


def drain(drainer_id: str) -> int:
    """Send queued requests, several in flight at once, until the outbox is empty,
    this job has run its time, or the worker is asked to stop. Answers how many it sent."""
    from workers.context import context, shutdown
    from workers.sending import send_one

    ctx = context()
    batch = max(1, ctx.settings.send_concurrency // CLAIM_BATCH_SHARE)
    started, sent = time.monotonic(), 0
    renewed = started
    in_flight: dict[Future[None], Claimed] = {}
    finished: queue.SimpleQueue[Future[None]] = queue.SimpleQueue()
    rounds = Rounds(ctx.partitions.count)
    while True:
        stopping = time.monotonic() - started > ctx.settings.drain_seconds or shutdown.is_set()
        if stopping and not in_flight:
            _ring(ctx, ctx.outbox.hand_over(drainer_id))
            return sent
        # Claiming also heart-beats this job, and every half heartbeat or so (not on every claim)
        # renews the leases of what it holds: at most 1.5 heartbeats apart.
        wanted = {} if stopping else _wanted(ctx.settings, in_flight.values())
        held = []
        heartbeat = time.monotonic() - renewed >= HEARTBEAT_S / 2
        if heartbeat:
            held, renewed = [item.rid for item in in_flight.values()], time.monotonic()
        among = rounds.next(full=heartbeat or not in_flight)
        try:
            claim = ctx.outbox.claim(drainer_id, wanted, held, may_leave=not in_flight, among=among)
        except RedisError as exc:  # a failover: the sends in flight go on; claim again in a moment
            log.warning("drain job could not claim (%s); trying again", type(exc).__name__)
            claim = Claim([], "", leave=False)
            renewed = 0.0
            if not in_flight:
                time.sleep(HEARTBEAT_S)
        if claim.leave:
            return sent
        _ring(ctx, claim.ring_id)
        rounds.found(bool(claim.items))
        for item in claim.items:
            future = ctx.pool.submit(send_one, ctx, item)
            in_flight[future] = item
            future.add_done_callback(finished.put)
        sent += len(claim.items)
        # More waits in the outbox when a class gave all that was asked of it: claim again once a
        # batch of slots is free. Otherwise poll; a stopping job only heart-beats.
        more = not stopping and _filled(wanted, claim.items)
        until = time.monotonic() + (HEARTBEAT_S / 2 if stopping or more else IDLE_POLL_S)
        _collect(ctx.settings, in_flight, finished, until, batch if more else 0)


class Rounds:
    """Which partitions a drain job claims from next. A full round (every partition, from the one
    after where the last round started, so none is always served last) when its heartbeat is due
    (it keeps the job a live drainer of every partition and renews every lease), when nothing is
    in flight (only a full round of empty claims lets the job leave) and after a round that found
    work (more may wait anywhere). Otherwise, with sends in flight and nothing found, one
    partition per idle poll, in turn: an idle drain job costs one claim per poll, as with one
    partition, plus a full round per half heartbeat, not one claim per partition per poll; new
    work waits at most about half a heartbeat for it meanwhile, and none at all under load."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.start = 0
        self.busy = True  # the last round found work: the next one is full

    def next(self, full: bool) -> list[int]:
        self.start = (self.start + 1) % self.count
        if full or self.busy or self.count == 1:
            return [(self.start + i) % self.count for i in range(self.count)]
        return [self.start]

    def found(self, work: bool) -> None:
        self.busy = work


def _collect(
    settings: Settings,
    in_flight: dict[Future[None], Claimed],
    finished: queue.SimpleQueue[Future[None]],
    until: float,
    enough: int,
) -> None:
    """Take finished sends off `in_flight` until `enough` slots are free (0: only wait until `until`)."""
    while in_flight:
        free = sum(_wanted(settings, in_flight.values()).values())
        if enough and free >= enough:
            return
        try:
            future = finished.get(timeout=max(0.0, until - time.monotonic()))
        except queue.Empty:
            return
        item = in_flight.pop(future)
        if future.exception() is not None:
            with logs.tagged(request_id=item.rid):
                log.error("send of %s failed: %r", item.rid, future.exception())


def _filled(wanted: dict[str, int], items: list[Claimed]) -> bool:
    got = Counter(item.api_class for item in items)
    return any(n > 0 and got[api_class] >= n for api_class, n in wanted.items())


def _wanted(settings: Settings, in_flight: Iterable[Claimed]) -> dict[str, int]:
    """Free send slots for other APIs; call creations only up to CALLS_IN_FLIGHT, since
    each of them may wait long for its rate-limit turn."""
    held = Counter(item.api_class for item in in_flight)
    return {
        keys.API: max(0, settings.send_concurrency - sum(held.values())),
        keys.CALLS: max(0, settings.calls_in_flight - held[keys.CALLS]),
    }


def _ring(ctx: WorkerContext, ring_id: str) -> None:
    if ring_id:
        enqueue_drain_job(ctx.queue, ring_id, ctx.settings)
