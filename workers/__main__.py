"""`python -m workers`: one RQ worker process that runs drain jobs and the sweep."""

from __future__ import annotations

import logging
import time
from types import FrameType

from redis.exceptions import RedisError
from rq import SimpleWorker

import logs
from config import refuse, settings_for
from store.health import WORKER, start_heartbeat
from store.partitions import PartitionCountMismatch
from workers.context import context, shutdown
from workers.notifying import Notifier
from workers.sweeping import SweepTicker

log = logging.getLogger("workers")

RESTART_PAUSE_S = 1.0


class SendWorker(SimpleWorker):
    """Runs jobs in-process so the HTTP pool and send threads live across jobs;
    a stop request also tells the running drain job to stop claiming."""

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        shutdown.set()
        super().request_stop(signum, frame)


def main() -> None:
    settings_for("worker")  # a setting the worker refuses ends it here, with one line naming it
    ctx = context()
    level = ctx.settings.log_level.upper()
    logs.configure(ctx.settings.log_format, level)  # before RQ's loggers: see logs.configure
    check_partitions()
    start_heartbeat(ctx.redis, WORKER, ctx.settings)  # alive even while no job runs
    log.info("worker starting: %s", ctx.settings.summary())
    SweepTicker(ctx).start()
    if ctx.settings.notify_hosts:
        Notifier(ctx.settings, ctx.notifications, shutdown).start()
    # RQ's work loop quits on any Redis error outside its dequeue (a failover, a restart):
    # this process outlives it and starts the loop again, until it is asked to stop.
    while not shutdown.is_set():
        try:
            SendWorker([ctx.queue], connection=ctx.rq_redis).work(logging_level=level)
        except RedisError as exc:
            log.warning("worker could not start its loop: Redis unavailable (%s)", type(exc).__name__)
        if not shutdown.is_set():
            log.warning("worker loop stopped; starting it again")
            time.sleep(RESTART_PAUSE_S)


def check_partitions() -> None:
    """Refuse to start on a store made with another partition count (store/partitions.py): this
    worker would claim, sweep and settle where no request is. Waits for Redis first (a worker
    does nothing without it)."""
    ctx, warned = context(), False
    while not shutdown.is_set():
        try:
            ctx.partitions.check(ctx.redis)
            return
        except PartitionCountMismatch as exc:
            refuse("worker", str(exc))
        except RedisError as exc:
            if not warned:
                log.warning("could not read the store's partition count (%s); trying again", type(exc).__name__)
                warned = True
            time.sleep(RESTART_PAUSE_S)


if __name__ == "__main__":
    main()
