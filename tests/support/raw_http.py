"""A raw-socket HTTP/1.1 client for what httpx will not send or read: several requests on one
kept-alive connection after a body the server did not read. It reads at most a bounded
answer, so a server that never ends its headers or lies about a length cannot make a test
allocate without bound."""

from __future__ import annotations

import socket

MAX_HEAD = 64 * 1024
MAX_BODY = 1 << 20


class AnswerTooLarge(AssertionError):
    pass


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send one request; answer the response head (its body is read and dropped), or b""
    if the server closed the connection instead."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            raise AnswerTooLarge(f"no end of the response head in {MAX_HEAD} bytes")
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    if length > MAX_BODY:
        raise AnswerTooLarge(f"Content-Length {length} is past {MAX_BODY}")
    left = length - len(rest)
    while left > 0 and (chunk := sock.recv(min(65536, left))):
        left -= len(chunk)
    return head
