"""gunicorn settings for the web process, from the environment.

gevent workers: a client waiting on ?wait holds a greenlet and a socket, not a
thread, so one process holds thousands (MAX_WAITERS) and the webhook keeps
its speed. The open-files limit is raised to the hard limit here, in the master,
and the workers inherit it; the connection and waiter caps follow from it.
The worker class and the logger class live in receiver/ (named by dotted path).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from config import raise_fd_limit, settings_for, web_capacity

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

# Checked here, in the master: a setting web refuses stops gunicorn before any worker starts
# (a worker that failed on it would only be started again and again).
_settings = settings_for("web")
bind = f"0.0.0.0:{_settings.port}"
worker_class = "receiver.web_worker.WebWorker"  # gevent, answering waiters at once on SIGTERM
workers = _settings.web_concurrency
worker_connections = web_capacity(_settings.max_waiters, raise_fd_limit())[0]
timeout = 90  # the hub must not be blocked this long
graceful_timeout = 65  # waiters are answered at once on SIGTERM; callbacks in progress run to their end
# Seconds an idle keep-alive connection is kept open (WEB_KEEPALIVE). Well above the idle
# expiry of the clients' pools (httpx 5 s, aiohttp 15 s, load balancers 60 s, Go 90 s), so
# that the client always closes first: at equal values a request sent on a connection just
# as we time it out is lost with the connection, and a sender (Plivo) does not resend it.
keepalive = _settings.web_keepalive
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
errorlog = "-"
loglevel = _settings.log_level
accesslog = _settings.access_log or None  # "-" for stdout
# No %(u)s: a key sent as a Basic user name must not reach the log; no headers either.
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
logger_class = "receiver.gunicorn_logger.Logger"  # LOG_FORMAT=json: every line one JSON object
# A GET callback carries its fields in the request line (a bulk message's uuid list is easily
# 40 KB): no limit of gunicorn's own (its parser's is then 1 MiB); the webhook refuses a query
# string past MAX_BODY_BYTES itself, with a JSON 414. Header limits fit what proxies in front
# add (a load balancer takes 16 KiB per header line).
limit_request_line = 0
limit_request_field_size = 16384
limit_request_fields = 200
control_socket_disable = True  # gunicorn 27: one fixed control-socket path per user would clash between instances


def post_worker_init(worker: Worker) -> None:
    """A web process serving from now on publishes its heartbeat (receiver/health.py) and moves
    requests filed under its keys' former tenant ids (receiver/auth.py), now and periodically.
    Here, not in create_app: apps made in tests' own process start no background work. Another
    app under this file (the benches' no-op baseline, bench/noop_app.py) has none of it."""
    if "answerback" not in getattr(worker.wsgi, "extensions", {}):
        return
    from receiver.auth import start_alias_moves
    from receiver.health import start

    worker.wsgi.extensions["answerback"].start_partition_check()
    start_alias_moves(worker.wsgi.extensions["answerback"], then=lambda: start(worker.wsgi))  # salt, then beats


def worker_exit(server: Arbiter, worker: Worker) -> None:
    """Flush the worker's latency observations not yet in Redis (store/metrics.py; atexit
    does too, but gunicorn's exit path is not ours to rely on)."""
    from store.metrics import flush_observations

    flush_observations()
