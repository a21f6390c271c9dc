"""gunicorn settings for the web process, from the environment.

gevent workers: a client waiting on ?wait holds a greenlet and a socket, not a
thread, so one process holds thousands (MAX_WAITERS) and the webhook keeps
its speed. The open-files limit is raised to the hard limit here, in the master,
and the workers inherit it; the connection and waiter caps follow from it.
"""
import os
import sys
from contextlib import contextmanager

import gevent
from gunicorn.workers.ggevent import GeventWorker

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from config import Settings, raise_fd_limit, web_capacity  # noqa: E402


class WebWorker(GeventWorker):
    """gunicorn's gevent worker, which on SIGTERM also answers every waiting client at
    once (with its record as it stands) and closes every idle keep-alive connection,
    while requests in progress run to their end. (gunicorn's own worker waits for idle
    connections to time out: with a long `keepalive` that is the whole graceful_timeout.)"""

    def init_process(self):
        self.idle: dict[gevent.Greenlet, gevent.Timeout] = {}   # connection -> its wait for a next request
        super().init_process()

    @contextmanager
    def timeout_ctx(self):
        """Around every wait for a connection's next request (the first one too)."""
        current = gevent.getcurrent()
        timeout = gevent.Timeout(self.cfg.keepalive if self.alive else 0.1, False)
        self.idle[current] = timeout
        try:
            with timeout:
                yield
        finally:
            self.idle.pop(current, None)

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        gevent.spawn(self.release_waiters)
        gevent.spawn(self.close_idle_connections)

    def close_idle_connections(self):
        """End every wait for a next request as if it had timed out: the connection closes."""
        for greenlet, timeout in list(self.idle.items()):
            greenlet.kill(timeout, block=False)

    def release_waiters(self):
        services = getattr(getattr(self, "wsgi", None), "extensions", {}).get("answerback")  # none before the app loaded
        if services is not None:
            services.release_waiters()


bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = WebWorker
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_connections = web_capacity(Settings.from_env().max_waiters, raise_fd_limit())[0]
timeout = 90            # the hub must not be blocked this long
graceful_timeout = 65   # waiters are answered at once on SIGTERM; callbacks in progress run to their end
# Seconds an idle keep-alive connection is kept open. Well above the idle expiry of the
# clients' pools (httpx 5 s, aiohttp 15 s, load balancers 60 s, Go 90 s), so that the
# client always closes first: at equal values a request sent on a connection just as we
# time it out is lost with the connection, and a sender (Plivo) does not resend it.
keepalive = int(os.environ.get("WEB_KEEPALIVE", "120"))
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
accesslog = os.environ.get("ACCESS_LOG") or None   # "-" for stdout
# No %(u)s: a key sent as a Basic user name must not reach the log; no headers either.
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
logger_class = "receiver.gunicorn_logger.Logger"   # LOG_FORMAT=json: every line one JSON object
control_socket_disable = True   # gunicorn 27: one fixed control-socket path per user would clash between instances


def worker_exit(server, worker):
    """Flush the worker's latency observations not yet in Redis (store/metrics.py; atexit
    does too, but gunicorn's exit path is not ours to rely on)."""
    from store.metrics import flush_observations
    flush_observations()
