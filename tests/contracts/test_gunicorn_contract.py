"""What receiver/web_worker.py (and receiver/gunicorn_logger.py) rely on in gunicorn, checked
against the installed gunicorn with its own parser, Response, Config and worker. A failure here
after an upgrade means gunicorn changed something web's worker reaches into: re-read the module
the message names (its docstring lists what it relies on).
Answers are written to a socket pair that counts writes (tests/gunicorn_io.py)."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import signal
import socket
from collections.abc import Iterator

import pytest
from gunicorn import glogging
from gunicorn.config import Config
from gunicorn.http.wsgi import Response, create
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

from receiver.gunicorn_logger import GUNICORN_LOGGERS
from receiver.web_worker import Client, WebWorker
from tests.gunicorn_io import message_pair, messages, parsed

RE_READ = "re-read receiver/web_worker.py"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with message_pair() as both:
        yield both


def test_the_master_loads_the_worker_class_by_its_dotted_path():
    cfg = Config()
    cfg.set("worker_class", "receiver.web_worker.WebWorker")
    assert cfg.worker_class is WebWorker, f"gunicorn no longer loads worker_class by dotted path: {RE_READ}"


@pytest.mark.parametrize("method, body", [("POST", b'{"outcome":"early"}\n'), ("HEAD", b"")])
def test_an_answers_head_goes_out_in_one_sendall_of_its_own(pair, method, body):
    ours, theirs = pair
    req, cfg = parsed(f"{method} /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    resp = Response(req, ours, cfg)
    resp.start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "20")])
    resp.write(body)
    resp.close()
    head, *rest = messages(theirs)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in head[:-4], (
        f"gunicorn's Response no longer writes an answer's head in one sendall of its own: {RE_READ}"
    )
    assert rest == ([body] if method == "POST" else []), (
        f"gunicorn's Response writes an answer's body differently: {RE_READ}"
    )


def test_a_chunked_answer_writes_its_head_first_then_each_chunk(pair):
    ours, theirs = pair
    req, cfg = parsed(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = Response(req, ours, cfg)
    resp.start_response("200 OK", [])
    resp.write(b"one")
    resp.close()
    head, *rest = messages(theirs)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"Transfer-Encoding: chunked\r\n\r\n"), (
        f"gunicorn's Response no longer writes a chunked answer's head in one sendall: {RE_READ}"
    )
    assert b"".join(rest) == b"3\r\none\r\n0\r\n\r\n", f"gunicorn's Response writes chunks differently: {RE_READ}"


def test_an_interim_answer_is_a_head_whose_status_starts_with_1(pair):
    ours, theirs = pair
    req, cfg = parsed(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    _, environ = create(req, ours, ("127.0.0.1", 40000), "127.0.0.1:8000", cfg)
    environ["wsgi.early_hints"]([("Link", "</a.css>")])
    [hints] = messages(theirs)
    assert hints[:5] == b"HTTP/" and hints[9:10] == b"1" and hints.endswith(b"\r\n\r\n"), (
        f"gunicorn writes an interim (1xx) answer differently: {RE_READ}"
    )


def test_a_request_that_must_close_is_answered_connection_close(pair):
    ours, theirs = pair
    req, cfg = parsed(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    req.must_close = True
    resp = Response(req, ours, cfg)
    resp.start_response("200 OK", [("Content-Length", "0")])
    resp.write(b"")
    resp.close()
    assert resp.should_close() and b"\r\nConnection: close\r\n" in messages(theirs)[0], (
        f"gunicorn no longer closes after a request whose must_close is set: {RE_READ}"
    )


def test_config_answers_through_getattr_and_changes_through_set():
    cfg = Config()
    assert "__getattr__" in vars(Config), f"gunicorn's Config no longer answers through __getattr__: {RE_READ}"
    for name, setting in cfg.settings.items():
        if hasattr(Config, name):
            continue  # a property computed from the setting (worker_class, address...): read as any attribute
        assert getattr(cfg, name) == setting.get(), f"gunicorn's Config reads {name} elsewhere: {RE_READ}"
    with pytest.raises(AttributeError):
        cfg.no_such_setting  # noqa: B018 (the read is the test)
    cfg.set("keepalive", 75)
    assert cfg.keepalive == 75, f"gunicorn's Config.set no longer changes what is read: {RE_READ}"


def test_the_worker_methods_overridden_keep_their_signatures():
    expected = {
        "init_process": ["self"],
        "handle": ["self", "listener", "client", "addr"],
        "handle_request": ["self", "listener_name", "req", "sock", "addr"],
        "timeout_ctx": ["self"],
        "handle_exit": ["self", "sig", "frame"],
    }
    for name, parameters in expected.items():
        found = list(inspect.signature(getattr(GeventWorker, name)).parameters)
        assert found == parameters, f"gunicorn changed GeventWorker.{name}{found}: {RE_READ}"


class RecordingWorker(GeventWorker):
    """gunicorn's gevent worker, noting when it waits for a request and when it answers one."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[str] = []
        self.socks: list[object] = []
        self.close_after: str | None = None  # a path whose request is made to close its connection

    def timeout_ctx(self):
        self.events.append("wait")
        return contextlib.nullcontext()

    def handle_request(self, listener_name, req, sock, addr):
        self.events.append(f"answer {req.path}")
        self.socks.append(sock)
        if req.path == self.close_after:
            req.must_close = True
        return super().handle_request(listener_name, req, sock, addr)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


@pytest.fixture
def worker() -> Iterator[RecordingWorker]:
    cfg = Config()
    cfg.set("keepalive", 5)
    worker = RecordingWorker(0, os.getpid(), [], None, 30, cfg, glogging.Logger(cfg))
    worker.wsgi = hello
    yield worker
    worker.tmp.close()


def test_each_wait_for_a_connections_next_request_is_inside_timeout_ctx(worker):
    client, server = socket.socketpair()
    with client, server:
        client.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        client.shutdown(socket.SHUT_WR)
        worker.handle(server, server, ("127.0.0.1", 40000))
        answers = client.recv(1 << 16)
    assert worker.events == ["wait", "answer /one", "wait", "answer /two", "wait"], (
        f"gunicorn's AsyncWorker.handle no longer waits for each request inside timeout_ctx: {RE_READ}"
    )
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert {"cfg", "alive", "worker_connections"} <= vars(worker).keys(), (
        f"gunicorn's worker no longer has cfg, alive or worker_connections: {RE_READ}"
    )


def test_requests_are_read_through_the_recv_of_the_client_object_given(worker):
    """Client counts the reads that brought bytes, for a stopping worker to tell a request
    arriving from an idle connection; gunicorn must read through its `recv`, and answer
    through the same object."""
    client, server = socket.socketpair()
    with client, server:
        ours = Client(server)
        client.sendall(b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        client.sendall(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        client.shutdown(socket.SHUT_WR)
        worker.handle(server, ours, ("127.0.0.1", 40000))
        answers = client.recv(1 << 16)
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert ours.reads >= 1, f"gunicorn's parser no longer reads through the client's recv: {RE_READ}"
    assert worker.socks == [ours, ours], (
        f"gunicorn's AsyncWorker.handle no longer hands handle_request the client it is given: {RE_READ}"
    )


def test_a_request_made_to_close_closes_its_connection(worker):
    """make_room sets must_close on a waiting client's request while the app runs."""
    worker.close_after = "/one"
    client, server = socket.socketpair()
    with client, server:
        client.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        client.shutdown(socket.SHUT_WR)
        worker.handle(server, server, ("127.0.0.1", 40000))
        answers = client.recv(1 << 16)
    assert worker.events == ["wait", "answer /one"] and b"Connection: close" in answers, (
        f"gunicorn no longer closes a connection after a request that must close: {RE_READ}"
    )


def test_handle_exit_stops_the_worker(worker):
    worker.handle_exit(signal.SIGTERM, None)
    assert worker.alive is False, f"gunicorn's handle_exit no longer marks the worker stopping: {RE_READ}"


def test_the_loggers_named_are_the_ones_gunicorn_writes_to():
    logger = glogging.Logger(Config())
    assert [logger.error_log, logger.access_log] == [logging.getLogger(n) for n in GUNICORN_LOGGERS], (
        "gunicorn renamed its loggers: re-read receiver/gunicorn_logger.py"
    )
    for name, parameters in {
        "setup": ["self", "cfg"],
        "access": ["self", "resp", "req", "environ", "request_time"],
    }.items():
        found = list(inspect.signature(getattr(glogging.Logger, name)).parameters)
        assert found == parameters, f"gunicorn changed Logger.{name}{found}: re-read receiver/gunicorn_logger.py"


def test_the_async_worker_still_calls_timeout_ctx():
    """The one undocumented method overridden: AsyncWorker declares it for its subclasses."""
    assert "timeout_ctx" in vars(AsyncWorker), f"gunicorn's AsyncWorker no longer has timeout_ctx: {RE_READ}"


def test_a_refused_request_is_answered_through_util_write_error():
    """json_error_pages replaces gunicorn.util.write_error; Worker.handle_error must still write
    its answer to a request it refuses through it, or the HTML page comes back."""
    from types import SimpleNamespace

    from gunicorn import util
    from gunicorn.http.errors import LimitRequestLine
    from gunicorn.workers.base import Worker

    from receiver.web_worker import json_error_pages

    original = util.write_error
    ours, theirs = socket.socketpair()
    try:
        json_error_pages()
        Worker.handle_error(
            SimpleNamespace(log=logging.getLogger("contract")), None, ours, ("127.0.0.1", 1), LimitRequestLine(20, 10)
        )
        ours.close()
        answer = b"".join(iter(lambda: theirs.recv(65536), b""))
    finally:
        util.write_error = original
        theirs.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414 ") and b"Content-Type: application/json" in head, (
        f"gunicorn's Worker.handle_error no longer answers through util.write_error: {RE_READ}"
    )
    assert body.startswith(b'{"error": ')
