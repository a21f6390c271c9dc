"""One send attempt of one request, and what its answer does to the record."""

from __future__ import annotations

import logging
from functools import partial
from time import perf_counter

import logs
from store.connection import within
from store.metrics import observe
from store.outbox import Claimed
from workers.backoff import parse_retry_after, retry_delay
from workers.context import SendStore, WorkerContext
from workers.upstream import Verdict

log = logging.getLogger(__name__)

PAUSE_AFTER_429_S = 1.0
# Seconds a send thread keeps trying to write to Redis while it is away (a failover):
# before the send nothing has left, after it the upstream's answer must not be dropped.
REDIS_BUDGET_S = 30.0


def send_one(ctx: WorkerContext, item: Claimed) -> None:
    with logs.tagged(request_id=item.rid):
        _send(ctx, item)


def _send(ctx: WorkerContext, item: Claimed) -> None:
    store = ctx.send_store()
    mark_sending = partial(store.outbox.mark_sending, item)
    at = ctx.partitions.at(item.rid)
    if within(REDIS_BUDGET_S, lambda: store.limiter.acquire(item.api_class, mark_sending, at)) is None:
        return
    start = perf_counter()
    verdict = ctx.client.send(item, f"{ctx.settings.callback_url}?rid={item.rid}")
    observe(ctx.redis, "upstream", verdict.kind, perf_counter() - start)
    within(REDIS_BUDGET_S, lambda: record(store, item, verdict, ctx.settings.max_attempts))


def record(store: SendStore, item: Claimed, verdict: Verdict, max_attempts: int) -> None:
    """Write down what one attempt's answer means; safe to repeat."""
    outbox = store.outbox
    if verdict.error.get("status") == 429:
        store.limiter.pause(item.api_class, parse_retry_after(verdict.retry_after) or PAUSE_AFTER_429_S)
    attempts = item.attempts + 1
    logs.bind(api_id=verdict.api_id.lower() if verdict.api_id else "")
    if verdict.kind == "accepted":
        outbox.register_api_id(item.rid, verdict.api_id.lower(), item.timeout, item.claim_id)
    elif verdict.kind == "completed":
        outbox.completed(item, verdict.body)
    elif verdict.kind == "unknown":
        outbox.unknown_outcome(item, verdict.error)
    elif verdict.kind == "retry" and attempts < max_attempts:
        outbox.retry(item, verdict.error | {"attempts": attempts}, retry_delay(attempts, verdict.retry_after))
    else:
        outbox.failed(item, verdict.error | {"attempts": attempts})
    log.debug("request %s attempt %d: %s", item.rid, attempts, verdict.kind)
