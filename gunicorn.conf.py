"""gunicorn settings for the web process, from the environment.

gevent workers: a client waiting on ?wait holds a greenlet and a socket, not a
thread, so one process holds thousands (MAX_WAITERS) and the webhook keeps
its speed. The open-files limit is raised to the hard limit here, in the master,
and the workers inherit it; the connection and waiter caps follow from it.
"""
import os
import select
import socket
import sys

import gevent
import gevent.monkey
from gunicorn.workers.ggevent import GeventWorker

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from config import Settings, raise_fd_limit, web_capacity  # noqa: E402

BUSY_KEEPALIVE = 5       # seconds an idle connection is kept while the worker's connections run short
STOPPING_KEEPALIVE = 1   # seconds a connection waits for a request once the worker is stopping


def _readable(client: socket.socket) -> bool:
    """Whether bytes (or the client's close) wait on a socket, without waiting: the original
    poll (select stops at descriptor 1024; gevent's would switch away from the hub, where
    this runs)."""
    fd = client.fileno()
    if fd < 0:
        return True   # closed already: nothing to end
    poller = gevent.monkey.get_original("select", "poll")()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class OneWrite:
    """The client's socket as gunicorn's writer of one answer sees it, sending a small answer
    in one write: gunicorn's Response sends the status line and headers in one `sendall` and
    the body in the next, two system calls (and two TCP segments) for every answer, about a
    twentieth of web's CPU per request. Here the header block waits for the body's first bytes
    and both go out together. Anything else done with the socket sends a waiting header block
    first, and so does `flush` at the end of each request, so nothing goes out of order or
    stays behind. This leans on how gunicorn 27's Response writes (a final answer's header
    block in one call, starting with "HTTP/"): tests/test_web_worker.py fails if that changes."""

    __slots__ = ("sock", "held")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.held = b""

    def sendall(self, data: bytes) -> None:
        if self.held:
            data, self.held = self.held + data, b""
        elif data[:5] == b"HTTP/" and data[9:10] != b"1" and data[-4:] == b"\r\n\r\n":
            self.held = data   # a final answer's header block (a 1xx one goes at once): wait for the body
            return
        self.sock.sendall(data)

    def flush(self) -> None:
        if self.held:
            data, self.held = self.held, b""
            self.sock.sendall(data)

    def __getattr__(self, name: str):
        self.flush()   # send, sendfile, shutdown, close...: the waiting header block goes first
        return getattr(self.sock, name)


class SettledConfig:
    """gunicorn's Config as one worker reads it: each setting read once, then kept as a plain
    attribute. gunicorn reads about 23 settings for every request (its parser, its WSGI
    environ, its answer, its worker) through Config.__getattr__, a dictionary lookup and a
    method call each. A worker's settings are fixed once it runs (gunicorn changes them only
    in its master, on a reload, which starts new workers); a `set` here still reaches
    gunicorn's Config and is seen from then on. tests/test_web_worker.py checks both."""

    def __init__(self, config) -> None:
        object.__setattr__(self, "_config", config)

    def __getattr__(self, name: str):
        value = getattr(self._config, name)   # AttributeError as gunicorn's own, for getattr(cfg, x, default)
        self.__dict__[name] = value
        return value

    def __setattr__(self, name: str, value) -> None:
        setattr(self._config, name, value)
        self.__dict__.pop(name, None)

    def set(self, name: str, value) -> None:
        self._config.set(name, value)
        self.__dict__.pop(name, None)


class IdleWait:
    """A connection's wait for its next request: up to `seconds`, then the connection closes
    (gevent.Timeout without an exception), listed in `idle` while it lasts so that SIGTERM
    can end it. A class, not a generator-based context manager: one is made for every request."""

    __slots__ = ("idle", "greenlet", "timeout")

    def __init__(self, idle: dict, seconds: float) -> None:
        self.idle = idle
        self.greenlet = gevent.getcurrent()
        self.timeout = gevent.Timeout(seconds, False)

    def __enter__(self) -> None:
        self.idle[self.greenlet] = self.timeout
        self.timeout.__enter__()

    def __exit__(self, kind, value, traceback) -> bool:
        self.idle.pop(self.greenlet, None)
        return self.timeout.__exit__(kind, value, traceback)


class WebWorker(GeventWorker):
    """gunicorn's gevent worker, which on SIGTERM also answers every waiting client at once
    (with its record as it stands) while requests in progress run to their end, and which
    keeps idle keep-alive connections `keepalive` seconds without letting them hold it up:

    - on SIGTERM, every answer not yet begun says `Connection: close`, and every connection
      waiting for its next request with nothing arrived is closed at once (gunicorn's own
      worker waits for them to time out: with a long keepalive, the whole graceful_timeout);
    - when fewer than a twentieth of its connections are free, a connection waits only
      BUSY_KEEPALIVE seconds for its next request, so idle ones cannot fill the pool;
    - a small answer goes out in one write, not two (OneWrite), and settings are read
      once (SettledConfig)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg = SettledConfig(self.cfg)

    def init_process(self):
        self.clients: dict[gevent.Greenlet, socket.socket] = {}   # connection -> its socket
        self.idle: dict[gevent.Greenlet, gevent.Timeout] = {}      # connection -> its wait for a next request
        self.serving: set = set()                                  # requests being answered
        super().init_process()

    def handle(self, listener, client, addr):
        current = gevent.getcurrent()
        self.clients[current] = client
        try:
            super().handle(listener, client, addr)
        finally:
            self.clients.pop(current, None)

    def handle_request(self, listener_name, req, sock, addr):
        self.serving.add(req)
        out = OneWrite(sock)
        try:
            return super().handle_request(listener_name, req, out, addr)
        finally:
            self.serving.discard(req)
            out.flush()   # a header block still waiting (an answer without a body)

    def timeout_ctx(self) -> "IdleWait":
        """Around every wait for a connection's next request (the first one too)."""
        if not self.alive:
            seconds = STOPPING_KEEPALIVE
        elif self.worker_connections - len(self.clients) < self.worker_connections // 20:
            seconds = min(self.cfg.keepalive, BUSY_KEEPALIVE)
        else:
            seconds = self.cfg.keepalive
        return IdleWait(self.idle, seconds)

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        for req in list(self.serving):
            req.must_close = True   # its answer says Connection: close, so no client sends on it again
        gevent.spawn(self.release_waiters)
        gevent.spawn(self.close_idle_connections)

    def close_idle_connections(self):
        """End every wait for a next request as if it had timed out (the connection closes),
        checked when the hub gets to it: a request may have arrived meanwhile."""
        loop = gevent.get_hub().loop
        for greenlet, timeout in list(self.idle.items()):
            loop.run_callback(self._end_idle_wait, greenlet, timeout)

    def _end_idle_wait(self, greenlet, timeout):
        client = self.clients.get(greenlet)
        if self.idle.get(greenlet) is not timeout or client is None or _readable(client):
            return   # being served now, or its next request (or the client's close) is there to read
        greenlet.throw(timeout)

    def release_waiters(self):
        services = getattr(getattr(self, "wsgi", None), "extensions", {}).get("answerback")  # none before the app loaded
        if services is not None:
            services.release_waiters()


_settings = Settings.from_env()
bind = f"0.0.0.0:{_settings.port}"
worker_class = WebWorker
workers = _settings.web_concurrency
worker_connections = web_capacity(_settings.max_waiters, raise_fd_limit())[0]
timeout = 90            # the hub must not be blocked this long
graceful_timeout = 65   # waiters are answered at once on SIGTERM; callbacks in progress run to their end
# Seconds an idle keep-alive connection is kept open (WEB_KEEPALIVE). Well above the idle
# expiry of the clients' pools (httpx 5 s, aiohttp 15 s, load balancers 60 s, Go 90 s), so
# that the client always closes first: at equal values a request sent on a connection just
# as we time it out is lost with the connection, and a sender (Plivo) does not resend it.
keepalive = _settings.web_keepalive
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
errorlog = "-"
loglevel = _settings.log_level
accesslog = _settings.access_log or None   # "-" for stdout
# No %(u)s: a key sent as a Basic user name must not reach the log; no headers either.
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
logger_class = "receiver.gunicorn_logger.Logger"   # LOG_FORMAT=json: every line one JSON object
control_socket_disable = True   # gunicorn 27: one fixed control-socket path per user would clash between instances


def worker_exit(server, worker):
    """Flush the worker's latency observations not yet in Redis (store/metrics.py; atexit
    does too, but gunicorn's exit path is not ours to rely on)."""
    from store.metrics import flush_observations
    flush_observations()
