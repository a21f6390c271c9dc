"""The WSGI application web serves: its two hot paths, a callback (receiver/callbacks.py)
and a submission (receiver/requests_api.py), are answered here, before Flask's dispatch; every
other request goes on to Flask.

Why: neither needs what Flask does for every request (contexts, the URL map, hooks, signals,
error handler lookup), and that costs about as much CPU as their own work (bench/README.md,
"Web's serving, in one process"). Both URLs stay rules of Flask's URL map, so Flask answers their other methods as on
any route (OPTIONS; 405 with Allow), and their errors are the same JSON answers as every
view's (receiver/errors.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from werkzeug.wrappers import Request

import logs
from receiver import callbacks, requests_api
from receiver.errors import body_finished, error_answer
from receiver.services import Services

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Flask

# status line, body, headers
Answer = tuple[str, bytes, "list[tuple[str, str]] | tuple[tuple[str, str], ...]"]
Serve = Callable[[Services, Request], Answer]


class Front:
    """GET, POST and HEAD on the webhook's URL, and POST on the submissions' URL, served
    here; every other request to `flask_app` (Flask's own wsgi_app)."""

    def __init__(self, app: Flask, flask_app: WSGIApplication) -> None:
        self.services: Services = app.extensions["answerback"]
        self.max_body_bytes: int | None = app.config["MAX_CONTENT_LENGTH"]
        self.flask_app = flask_app
        self.routes: dict[tuple[str, str], Serve] = {
            **{(method, callbacks.PATH): callbacks.serve for method in callbacks.SERVED},
            ("POST", requests_api.SUBMIT_PATH): requests_api.serve_submission,
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        serve = self.route(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""))
        if serve is None:
            return self.flask_app(environ, start_response)
        logs.clear()  # a greenlet serves every request of its connection
        request = Request(environ, populate_request=False)  # no environ <-> request cycle for the GC to find
        request.max_content_length = self.max_body_bytes
        try:
            status, body, headers = serve(self.services, request)
        except Exception as exc:
            response = error_answer(exc, self.max_body_bytes, request.content_length)
            if not body_finished(request):
                response.headers["Connection"] = "close"
            return response(environ, start_response)
        headers = [*headers] if body_finished(request) else [*headers, ("Connection", "close")]
        start_response(status, headers)
        return [body]

    def route(self, method: str, path: str) -> Serve | None:
        """What serves this request here, if anything. The webhook also takes a path with
        extra leading slashes, which Flask's URL map reads as the same URL (a proxy may add one)."""
        serve = self.routes.get((method, path))
        if serve is None and path.startswith("//"):
            serve = self.routes.get((method, "/" + path.lstrip("/")))
            return serve if serve is callbacks.serve else None
        return serve
