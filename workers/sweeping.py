"""The sweep, run on schedule by a thread in every worker process, by one of them at a time;
it also works through the bulk retries (store/retries.py), a batch per pass."""

from __future__ import annotations

import logging
import os
import socket
import threading

from redis.exceptions import RedisError

from store.drain_jobs import enqueue_drain_job
from store.health import redis_now_ms
from workers.context import WorkerContext

log = logging.getLogger(__name__)


class SweepTicker(threading.Thread):
    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(name="sweep", daemon=True)
        self.ctx = ctx
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = threading.Event()

    def run(self) -> None:
        interval = self.ctx.settings.sweep_interval
        while True:
            try:
                self.tick(interval)
            except RedisError as exc:
                log.warning("sweep skipped: Redis unavailable (%s)", type(exc).__name__)
            if self.stopping.wait(interval):
                return

    def tick(self, interval: float) -> None:
        if not self.ctx.sweeper.try_lock(self.holder, interval * 0.9):
            return
        result = self.ctx.sweeper.sweep()
        self.ctx.sweeper.mark_ran(redis_now_ms())
        rings = [result.ring_id, *self.ctx.retries.work(self.ctx.settings.bulk_retry_batch)]
        for ring_id in filter(None, rings):
            enqueue_drain_job(self.ctx.queue, ring_id, self.ctx.settings)
        if result.expired or result.recovered or result.purged:
            log.info("sweep: %d expired, %d recovered, %d purged", result.expired, result.recovered, result.purged)
