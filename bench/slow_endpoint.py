"""An application endpoint that answers every POST after a fixed latency (for bench.notifications).

  python -m bench.slow_endpoint PORT LATENCY_S

POST anything: 204 after LATENCY_S. GET /stats: {"count", "first_start", "last_end"} (epoch
seconds, this process's clock); DELETE /stats resets them. Keep-alive (HTTP/1.1), one
thread per connection, so it serves any number of clients at once.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.count, self.first_start, self.last_end = 0, 0.0, 0.0

    def add(self, started: float, ended: float) -> None:
        with self.lock:
            self.count += 1
            self.first_start = min(self.first_start or started, started)
            self.last_end = max(self.last_end, ended)


def main(argv: list[str]) -> int:
    port, latency = int(argv[0]), float(argv[1])
    stats = Stats()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            started = time.time()
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(latency)
            self.send_response(204)
            self.end_headers()
            stats.add(started, time.time())

        def do_GET(self) -> None:
            body = json.dumps(
                {"count": stats.count, "first_start": stats.first_start, "last_end": stats.last_end}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_DELETE(self) -> None:
            stats.reset()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
