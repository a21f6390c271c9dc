"""Web's gunicorn worker (gunicorn.conf.py names it by its dotted path): gunicorn's gevent worker,
which on SIGTERM answers every waiting client at once, keeps idle keep-alive connections without
letting them hold it up, and spends less CPU per request than gunicorn's own.

This is the one module that reaches into gunicorn below its settings and hooks. It was checked
against gunicorn 27.0.1, and relies on:

- `GeventWorker` (gunicorn.workers.ggevent) and the methods overridden here, with these
  signatures: `init_process(self)`, `handle(self, listener, client, addr)`,
  `handle_request(self, listener_name, req, sock, addr)`, `handle_exit(self, sig, frame)`,
  and the undocumented `timeout_ctx(self)`, which `AsyncWorker.handle` enters around every wait
  for a connection's next request (the first one too), and nowhere else;
- the worker's attributes `cfg`, `alive` (False once it stops), `worker_connections` and `wsgi`;
- a request's `must_close` attribute: set, its answer says `Connection: close`;
- gunicorn's `Response` writing a final answer's status line and headers in one `sendall` of
  their own, starting with "HTTP/x.y NNN" and ending with a blank line, and writing the body
  with later calls on the same socket (OneWrite);
- `Config` answering every setting through `__getattr__`, raising AttributeError for an unknown
  name, and changing one only through `set` (SettledConfig);
- `Worker.handle_error` answering a request it could not parse or serve through the module
  function `gunicorn.util.write_error(sock, status_int, reason, mesg)`, which
  `json_error_pages` replaces in a worker so that those answers are JSON like every other;
- gunicorn's master loading the worker class by its dotted path (so this module, and what it
  imports, is imported in the master: nothing here may import store/, redis, rq or Flask).

tests/contracts/test_gunicorn_contract.py checks each of these against the installed gunicorn.
"""
from __future__ import annotations

import json
import select
import socket

import gevent
import gevent.monkey
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

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
    the body in the next, two system calls (and two TCP segments) for every answer. Here the
    header block waits for the body's first bytes and both go out together. Anything else done
    with the socket sends a waiting header block first, and so does `flush` at the end of each
    request, so nothing goes out of order or stays behind."""

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
    attribute. gunicorn reads settings for every request (its parser, its WSGI environ,
    its answer, its worker) through Config.__getattr__, a dictionary lookup and a
    method call each. A worker's settings are fixed once it runs (gunicorn changes them only
    in its master, on a reload, which starts new workers); a `set` here still reaches
    gunicorn's Config and is seen from then on."""

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


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it refuses before the app sees it (a request line or
    header past its limit, a malformed request), as JSON like every answer of Answerback's
    (`{"error": ...}`) instead of gunicorn's HTML page."""
    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def json_error_pages() -> None:
    """Make gunicorn's error answers in this process JSON (write_json_error)."""
    util.write_error = write_json_error


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
      once (SettledConfig);
    - what gunicorn refuses itself (a request line past 1 MiB, too many headers) is answered
      in JSON (write_json_error)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg = SettledConfig(self.cfg)

    def init_process(self):
        self.clients: dict[gevent.Greenlet, socket.socket] = {}   # connection -> its socket
        self.idle: dict[gevent.Greenlet, gevent.Timeout] = {}      # connection -> its wait for a next request
        self.serving: set = set()                                  # requests being answered
        json_error_pages()
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

    def timeout_ctx(self) -> IdleWait:
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
        app = getattr(self, "wsgi", None)   # none before the app loaded
        services = getattr(app, "extensions", {}).get("answerback")
        if services is not None:
            services.release_waiters()
