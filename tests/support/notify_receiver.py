"""The application's side of notifications, for tests: a real HTTP server that
verifies every notification with the `standardwebhooks` library."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from local.redis_server import free_port

OLD_SECRET = "whsec_" + base64.b64encode(b"the-old-notification-secret-0001").decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"the-new-notification-secret-0002").decode()


class Receiver:
    """The application's endpoint. Answers each notification with the next of `answers`
    (a status, or (status, headers), or "hang": no answer until released), then 200."""

    def __init__(self, *secrets: str, port: int | None = None) -> None:
        self.hooks = [Webhook(s) for s in secrets or (NEW_SECRET,)]
        self.port = port or free_port()
        self.answers: list[Any] = []
        self.received: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=t0ken"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.take(self, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def take(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = dict(handler.headers.items())
        verified = [self._verifies(hook, body, headers) for hook in self.hooks]
        payload = json.loads(body)
        self.received.append(
            {"headers": headers, "payload": payload, "verified": verified, "path": handler.path, "time": time.time()}
        )
        answer = self.answers.pop(0) if self.answers else 200
        if answer == "hang":
            self.release.wait(30)
            return
        status, extra = answer if isinstance(answer, tuple) else (answer, {})
        handler.send_response(status)
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    @staticmethod
    def _verifies(hook: Webhook, body: bytes, headers: dict[str, str]) -> bool:
        try:
            hook.verify(body, headers)
            return True
        except WebhookVerificationError:
            return False

    def events(self, rid: str) -> list[dict[str, Any]]:
        return [r for r in self.received if r["payload"]["data"]["request_id"] == rid]

    def stop(self) -> None:
        self.release.set()
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
