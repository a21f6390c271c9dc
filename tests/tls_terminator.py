"""A TLS terminator in front of a real Redis, playing a managed provider whose certificate no
public CA signed (the bundled redis-server is built without TLS). Each piece of the plain
stream is sent on as it arrives, so replies Redis writes at once share one TLS record."""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trustme


class TlsTerminator(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, redis_port: int) -> None:
        self.context, self.redis_port = context, redis_port
        super().__init__(("127.0.0.1", 0), _Pipe)


class _Pipe(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            tls = self.server.context.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client refused our certificate
        with tls, socket.create_connection(("127.0.0.1", self.server.redis_port)) as plain:
            threading.Thread(target=_copy, args=(plain, tls), daemon=True).start()
            _copy(tls, plain)


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass


@contextmanager
def tls_in_front_of(redis_port: int, ca_dir: Path) -> Iterator[tuple[str, str]]:
    """A `rediss://` URL reaching the Redis on `redis_port` through TLS, and the file of the
    certificate authority that signed the terminator's certificate (written in `ca_dir`)."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = ca_dir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = TlsTerminator(context, redis_port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"rediss://127.0.0.1:{server.server_address[1]}/0", str(ca_file)
    finally:
        server.shutdown()
        server.server_close()
