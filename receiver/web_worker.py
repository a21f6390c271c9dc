"""Web's gunicorn worker (gunicorn.conf.py names it by its dotted path): gunicorn's gevent worker,
which on SIGTERM answers every waiting client at once, keeps idle keep-alive connections without
letting them hold it up or fill it (a webhook sender's last of all), and spends less CPU per
request than gunicorn's own.

This is the one module that reaches into gunicorn below its settings and hooks. It was checked
against gunicorn 27.0.1, and relies on:

- `GeventWorker` (gunicorn.workers.ggevent) and the methods overridden here, with these
  signatures: `init_process(self)`, `handle(self, listener, client, addr)`,
  `handle_request(self, listener_name, req, sock, addr)`, `handle_exit(self, sig, frame)`,
  and the undocumented `timeout_ctx(self)`, which `AsyncWorker.handle` enters around every wait
  for a connection's next request (the first one too), and nowhere else;
- the worker's attributes `cfg`, `alive` (False once it stops), `worker_connections` and `wsgi`;
- `AsyncWorker.handle` reading a connection's requests (and bodies) only through the `recv`
  of the client object it is given (the parser takes any object with `recv` for a socket),
  and handing that object to `handle_request` (Client);
- a request's `path`, and its `must_close` attribute: set, its answer says `Connection: close`
  and the connection closes after it, also when set while the app is running;
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
from typing import Any

import gevent
import gevent.monkey
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

BUSY_KEEPALIVE = 5  # seconds an idle connection is kept while the worker's connections run short
STOPPING_KEEPALIVE = 1  # seconds a connection waits for a request once the worker is stopping
CALLBACK_PATHS = "/callbacks/"  # a connection that carried a request here is a webhook sender's


def _readable(client: socket.socket) -> bool:
    """Whether bytes (or the client's close) wait on a socket, without waiting: the original
    poll (select stops at descriptor 1024; gevent's would switch away from the hub, where
    this runs)."""
    fd = client.fileno()
    if fd < 0:
        return True  # closed already: nothing to end
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
            self.held = data  # a final answer's header block (a 1xx one goes at once): wait for the body
            return
        self._send(data)

    def flush(self) -> None:
        if self.held:
            data, self.held = self.held, b""
            self._send(data)

    def _send(self, data: bytes) -> None:
        """`data` in one `send` when the socket takes it all, as it takes any small answer;
        the rest, if any, by `sendall`. gevent's `sendall` asks the kernel for the socket's
        send buffer size (a system call) on every call, to cut what it sends in chunks."""
        sent = self.sock.send(data)
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])

    def __getattr__(self, name: str) -> Any:
        self.flush()  # send, sendfile, shutdown, close...: the waiting header block goes first
        return getattr(self.sock, name)


class SettledConfig:
    """gunicorn's Config as one worker reads it: each setting read once, then kept as a plain
    attribute. gunicorn reads settings for every request (its parser, its WSGI environ,
    its answer, its worker) through Config.__getattr__, a dictionary lookup and a
    method call each. A worker's settings are fixed once it runs (gunicorn changes them only
    in its master, on a reload, which starts new workers); a `set` here still reaches
    gunicorn's Config and is seen from then on."""

    def __init__(self, config: Any) -> None:
        object.__setattr__(self, "_config", config)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._config, name)  # AttributeError as gunicorn's own, for getattr(cfg, x, default)
        self.__dict__[name] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._config, name, value)
        self.__dict__.pop(name, None)

    def set(self, name: str, value: Any) -> None:
        self._config.set(name, value)
        self.__dict__.pop(name, None)


class Client:
    """A client's socket as gunicorn reads requests from it, counting the reads that brought
    bytes: once gunicorn's parser has taken the first bytes of a request off the socket,
    nothing is left there to see, and a stopping worker must still tell that connection (its
    request arriving) from an idle one. Also what the worker knows of the connection: whether
    it carried a request, and whether one was a callback (a webhook sender's connection)."""

    __slots__ = ("reads", "sender", "served", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reads = 0
        self.served = self.sender = False

    def recv(self, *args: Any) -> bytes:
        data = self.sock.recv(*args)
        if data:
            self.reads += 1
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class IdleWait:
    """A connection's wait for its next request: up to `seconds`, then the connection closes
    (gevent.Timeout without an exception), listed in `idle` while it lasts so that SIGTERM
    can end it, and in `others` too when the connection has carried requests but never a
    callback (the first to close when connections run short). A class, not a generator-based
    context manager: one is made for every request."""

    __slots__ = ("client", "greenlet", "idle", "others", "reads", "timeout")

    def __init__(
        self,
        idle: dict[gevent.Greenlet, IdleWait],
        others: dict[gevent.Greenlet, IdleWait],
        client: Client | None,
        seconds: float,
    ) -> None:
        self.idle, self.others, self.client = idle, others, client
        self.greenlet = gevent.getcurrent()
        self.reads = client.reads if client is not None else 0
        self.timeout = gevent.Timeout(seconds, False)

    def __enter__(self) -> None:
        self.idle[self.greenlet] = self
        if self.client is not None and self.client.served and not self.client.sender:
            self.others[self.greenlet] = self
        self.timeout.__enter__()

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> bool:
        self.idle.pop(self.greenlet, None)
        self.others.pop(self.greenlet, None)
        return self.timeout.__exit__(kind, value, traceback)

    def arriving(self) -> bool:
        """Whether the next request has started arriving (bytes read, or readable), or the
        client's close is there to read: then the wait is not to be ended."""
        client = self.client
        return client is None or client.reads != self.reads or _readable(client.sock)


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it refuses before the app sees it (a request line or
    header past its limit, a malformed request), as JSON like every answer of Answerback's
    (`{"error": ...}`) instead of gunicorn's HTML page."""
    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
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
    - on SIGTERM, a connection whose next request has started arriving (even a part of it)
      is served, its answer saying `Connection: close`;
    - when fewer than a twentieth of its connections are free, it makes room first with what
      costs a webhook sender nothing: it closes idle connections that carried requests but
      never a callback (client-API keep-alives), then answers waiting clients early (as past
      the waiter cap, from the tenant holding the most; make_room). Only when that is not
      enough does a sender's connection wait just BUSY_KEEPALIVE seconds for its next request
      (as every other connection does meanwhile), so idle ones cannot fill the pool: a sender
      (Plivo) whose pooled connection is closed under it may lose the callback sent on it;
    - a small answer goes out in one write, not two (OneWrite), and settings are read
      once (SettledConfig);
    - what gunicorn refuses itself (a request line past 1 MiB, too many headers) is answered
      in JSON (write_json_error)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cfg: Any = SettledConfig(self.cfg)

    def init_process(self) -> None:
        self.clients: dict[gevent.Greenlet, Client] = {}  # connection -> its socket
        self.idle: dict[gevent.Greenlet, IdleWait] = {}  # connection -> its wait for a next request
        self.idle_others: dict[gevent.Greenlet, IdleWait] = {}  # those of connections that never carried a callback
        self.serving: dict[gevent.Greenlet, Any] = {}  # connection -> the request it answers
        self.leaving: set[gevent.Greenlet] = set()  # connections being closed to make room
        json_error_pages()
        super().init_process()

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        current = gevent.getcurrent()
        self.clients[current] = ours = Client(client)
        try:
            super().handle(listener, ours, addr)
        finally:
            self.clients.pop(current, None)
            self.leaving.discard(current)

    def handle_request(self, listener_name: str, req: Any, sock: Any, addr: Any) -> Any:
        current = gevent.getcurrent()
        self.serving[current] = req
        if isinstance(sock, Client):
            sock.served = True
            sock.sender = sock.sender or req.path.startswith(CALLBACK_PATHS)
            sock = sock.sock
        out = OneWrite(sock)
        try:
            return super().handle_request(listener_name, req, out, addr)
        finally:
            self.serving.pop(current, None)
            out.flush()  # a header block still waiting (an answer without a body)

    def timeout_ctx(self) -> IdleWait:
        """Around every wait for a connection's next request (the first one too)."""
        client = self.clients.get(gevent.getcurrent())
        short = self.worker_connections // 20 - (self.worker_connections - len(self.clients) + len(self.leaving))
        if not self.alive:
            seconds = STOPPING_KEEPALIVE
        elif short > 0 and not (self.make_room(short) >= short and client is not None and client.sender):
            seconds = min(self.cfg.keepalive, BUSY_KEEPALIVE)
        else:
            seconds = self.cfg.keepalive
        return IdleWait(self.idle, self.idle_others, client, seconds)

    def make_room(self, wanted: int) -> int:
        """Close up to `wanted` connections that cost a webhook sender nothing: idle ones that
        never carried a callback (the longest idle first), then those of waiting clients
        (answered early, `Connection: close`). Answers how many are on their way out."""
        made = 0
        loop = gevent.get_hub().loop
        while made < wanted and self.idle_others:
            greenlet, wait = next(iter(self.idle_others.items()))
            del self.idle_others[greenlet]
            self.leaving.add(greenlet)
            loop.run_callback(self._end_idle_wait, greenlet, wait)
            made += 1
        services = self._services()
        if made < wanted and services is not None:
            for greenlet in services.shed_waiters(wanted - made):
                req = self.serving.get(greenlet)
                if req is not None:
                    req.must_close = True  # its answer says Connection: close, and the connection closes
                    self.leaving.add(greenlet)
                    made += 1
        return made

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        for req in list(self.serving.values()):
            req.must_close = True  # its answer says Connection: close, so no client sends on it again
        gevent.spawn(self.release_waiters)
        gevent.spawn(self.close_idle_connections)

    def close_idle_connections(self) -> None:
        """End every wait for a next request as if it had timed out (the connection closes),
        checked when the hub gets to it: a request may have arrived meanwhile."""
        loop = gevent.get_hub().loop
        for greenlet, wait in list(self.idle.items()):
            loop.run_callback(self._end_idle_wait, greenlet, wait)

    def _end_idle_wait(self, greenlet: gevent.Greenlet, wait: IdleWait) -> None:
        if self.idle.get(greenlet) is not wait or wait.arriving():
            self.leaving.discard(greenlet)
            return  # being served now, or its next request (or the client's close) is arriving
        greenlet.throw(wait.timeout)

    def release_waiters(self) -> None:
        services = self._services()
        if services is not None:
            services.release_waiters()

    def _services(self) -> Any:
        app = getattr(self, "wsgi", None)  # none before the app loaded
        return getattr(app, "extensions", {}).get("answerback")
