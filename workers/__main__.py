"""`python -m workers`: one RQ worker process that runs drain jobs and the sweep."""
from __future__ import annotations

import os

from rq import SimpleWorker

import logs
from workers.context import context, shutdown
from workers.notifying import Notifier
from workers.sweeping import SweepTicker


class SendWorker(SimpleWorker):
    """Runs jobs in-process so the HTTP pool and send threads live across jobs;
    a stop request also tells the running drain job to stop claiming."""

    def request_stop(self, signum, frame):
        shutdown.set()
        super().request_stop(signum, frame)


def main() -> None:
    ctx = context()
    level = os.environ.get("LOG_LEVEL", "info").upper()
    logs.configure(ctx.settings.log_format, level)   # before RQ's loggers: see logs.configure
    SweepTicker(ctx).start()
    if ctx.settings.notify_hosts:
        Notifier(ctx.settings, ctx.notifications, shutdown).start()
    worker = SendWorker([ctx.queue], connection=ctx.rq_redis)
    worker.work(logging_level=level)


if __name__ == "__main__":
    main()
