"""Abort a client's connection with a TCP reset instead of any HTTP answer."""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

LINGER_ZERO = struct.pack("ii", 1, 0)


def reset_connection(environ: dict[str, Any]) -> bool:
    """Reset the client's TCP connection now; False when the server hides the socket (not gunicorn).

    SO_LINGER {1, 0} makes the close send RST. The close is done by dup2-ing a dead
    socketpair end over the descriptor: gunicorn still owns that descriptor number,
    and its later write then fails with EPIPE, which it ignores quietly, instead of
    hitting a closed or reused descriptor.
    """
    client = environ.get("gunicorn.socket")
    if client is None:
        return False
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
    dead, peer = socket.socketpair()
    peer.close()
    os.dup2(dead.fileno(), client.fileno())
    dead.close()
    return True
