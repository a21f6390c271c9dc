"""What receiver/web_worker.py does to gunicorn's own serving to spend less CPU per request,
through gunicorn's own parser and Response (what it relies on in gunicorn is checked in
tests/contracts/test_gunicorn_contract.py).

Answers are written to a socket pair that counts writes (tests/gunicorn_io.py).
"""

import socket
import threading

import pytest
from gunicorn.config import Config
from gunicorn.http.wsgi import Response

from receiver.web_worker import OneWrite, SettledConfig
from tests.gunicorn_io import message_pair, messages, parsed


@pytest.fixture
def pair():
    with message_pair() as both:
        yield both


def test_an_answer_goes_out_in_one_write_with_its_headers(pair):
    ours, theirs = pair
    req, cfg = parsed(b"POST /callbacks/plivo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    out = OneWrite(ours)
    resp = Response(req, out, cfg)
    resp.start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "20")])
    resp.write(b'{"outcome":"early"}\n')
    resp.close()
    out.flush()
    [answer] = messages(theirs)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\n" + b'{"outcome":"early"}\n')


def test_an_answer_without_a_body_is_sent_when_the_request_ends(pair):
    ours, theirs = pair
    req, cfg = parsed(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    out = OneWrite(ours)
    resp = Response(req, out, cfg)
    resp.start_response("200 OK", [("Content-Length", "15")])
    resp.write(b"")
    resp.close()
    assert messages(theirs) == []  # held: a body could still come
    out.flush()
    [answer] = messages(theirs)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n")


def test_a_streamed_answer_keeps_its_order_and_each_later_chunk_is_its_own_write(pair):
    ours, theirs = pair
    req, cfg = parsed(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    out = OneWrite(ours)
    resp = Response(req, out, cfg)
    resp.start_response("200 OK", [])  # no length: chunked
    resp.write(b"one")
    resp.write(b"two")
    resp.close()
    out.flush()
    first, *rest = messages(theirs)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in first
    assert first.endswith(b"\r\n\r\n3\r\none\r\n")
    assert b"".join(rest) == b"3\r\ntwo\r\n0\r\n\r\n"


def test_anything_else_done_with_the_socket_sends_the_held_headers_first(pair):
    ours, theirs = pair
    out = OneWrite(ours)
    out.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    out.fileno()  # e.g. gunicorn's sendfile, or its shutdown after an error
    assert messages(theirs) == [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"]


def test_an_interim_answer_is_not_held(pair):
    ours, theirs = pair
    out = OneWrite(ours)
    out.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
    assert messages(theirs) == [b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"]


def test_an_answer_larger_than_the_send_buffer_arrives_whole_and_in_order():
    """A socket that takes only part of an answer in one send (a timeout socket, as gevent's
    are underneath, sends what its buffer takes) gets the rest sent after it."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.settimeout(10)
        got = bytearray()
        reader = threading.Thread(target=lambda: got.extend(b"".join(iter_received(theirs))))
        reader.start()
        body = bytes(range(256)) * 4096  # 1 MiB, far past the buffer
        out = OneWrite(ours)
        out.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        out.sendall(body)
        out.flush()
        ours.shutdown(socket.SHUT_WR)
        reader.join(10)
    assert bytes(got) == b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def iter_received(sock: socket.socket):
    while chunk := sock.recv(1 << 16):
        yield chunk


def configured(**settings) -> Config:
    cfg = Config()
    for name, value in settings.items():
        cfg.set(name, value)
    return cfg


def test_a_settled_config_reads_every_setting_as_gunicorns_config_does():
    cfg = configured(keepalive=75, forwarded_allow_ips="10.0.0.0/8", limit_request_fields=50)
    settled = SettledConfig(cfg)
    for _ in range(2):  # the first read, then the kept one
        for name in cfg.settings:
            assert getattr(settled, name) == getattr(cfg, name), name
        assert settled.is_ssl == cfg.is_ssl and settled.sendfile == cfg.sendfile
        assert settled.forwarded_allow_networks() == cfg.forwarded_allow_networks()
    assert getattr(settled, "no_such_setting", "default") == "default"
    with pytest.raises(AttributeError):
        settled.no_such_setting  # noqa: B018 (the read is the test)


def test_a_setting_changed_later_is_seen():
    cfg = configured(keepalive=75)
    settled = SettledConfig(cfg)
    assert settled.keepalive == 75
    settled.set("keepalive", 3)
    assert settled.keepalive == 3 and cfg.keepalive == 3


@pytest.mark.parametrize("peer, scheme", [("10.1.2.3", "https"), ("192.0.2.7", "http")])
def test_only_a_trusted_proxy_sets_the_scheme_through_a_settled_config(peer, scheme):
    """The webhook's signature covers the URL's scheme: X-Forwarded-Proto counts only from an
    address in forwarded_allow_ips, read through the settled config as through gunicorn's."""
    settled = SettledConfig(configured(forwarded_allow_ips="10.0.0.0/8"))
    raw = b"POST /callbacks/plivo HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nContent-Length: 0\r\n\r\n"
    for _ in range(2):
        req, _ = parsed(raw, settled, peer)
        assert req.scheme == scheme
