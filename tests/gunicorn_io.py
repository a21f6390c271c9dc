"""gunicorn's own request objects, parsed from a real socket, and the writes an answer made,
counted: answers are written to one end of a SOCK_SEQPACKET socket pair, where every write
arrives as one message of its own, so the number of messages is the number of writes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from gunicorn.config import Config
from gunicorn.http.parser import RequestParser


def parsed(raw: bytes, cfg: Config | None = None, peer: str = "127.0.0.1"):
    """gunicorn's own request object for `raw`, read by its parser from a real socket as if
    sent from `peer`, and the Config it was read with."""
    cfg = cfg or Config()
    client, server = socket.socketpair()
    with client, server:
        client.sendall(raw)
        client.shutdown(socket.SHUT_WR)
        return next(RequestParser(cfg, server, (peer, 40000))), cfg


@contextmanager
def message_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected sockets: what is written on the first arrives on the second one write a message."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        yield ours, theirs


def messages(sock: socket.socket) -> list[bytes]:
    """Every message waiting on `sock`, one per write made on its peer."""
    sock.setblocking(False)
    found = []
    while True:
        try:
            found.append(sock.recv(1 << 16))
        except BlockingIOError:
            return found
