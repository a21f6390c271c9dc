"""One send attempt of one request, and what its answer does to the record."""
from __future__ import annotations

import logging
from functools import partial
from time import perf_counter

import logs
from store.metrics import observe
from store.outbox import Claimed
from workers.backoff import parse_retry_after, retry_delay
from workers.context import WorkerContext

log = logging.getLogger(__name__)

PAUSE_AFTER_429_S = 1.0


def send_one(ctx: WorkerContext, item: Claimed) -> None:
    with logs.tagged(request_id=item.rid):
        _send(ctx, item)


def _send(ctx: WorkerContext, item: Claimed) -> None:
    outbox = ctx.outbox
    if ctx.limiter.acquire(item.api_class, partial(outbox.mark_sending, item.rid)) is None:
        return
    start = perf_counter()
    verdict = ctx.client.send(item, f"{ctx.settings.callback_url}?rid={item.rid}")
    observe(ctx.redis, "upstream", verdict.kind, perf_counter() - start)
    if verdict.error.get("status") == 429:
        ctx.limiter.pause(item.api_class, parse_retry_after(verdict.retry_after) or PAUSE_AFTER_429_S)
    attempts = item.attempts + 1
    logs.bind(api_id=verdict.api_id.lower() if verdict.api_id else "")
    if verdict.kind == "accepted":
        outbox.register_api_id(item.rid, verdict.api_id.lower(), item.timeout)
    elif verdict.kind == "completed":
        outbox.completed(item.rid, verdict.body)
    elif verdict.kind == "unknown":
        outbox.unknown_outcome(item.rid, verdict.error, item.timeout)
    elif verdict.kind == "retry" and attempts < ctx.settings.max_attempts:
        outbox.retry(item.rid, verdict.error | {"attempts": attempts},
                     retry_delay(attempts, verdict.retry_after))
    else:
        outbox.failed(item.rid, verdict.error | {"attempts": attempts})
    log.debug("request %s attempt %d: %s", item.rid, attempts, verdict.kind)
