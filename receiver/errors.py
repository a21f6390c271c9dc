"""Domain exceptions raised by views, and the one place that maps them to JSON answers."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, request
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wrappers import Request

from receiver.json_provider import compact_json
from store.connection import OUTAGE, WriteRefused

log = logging.getLogger(__name__)


RETRY_AFTER_S = 5  # told to clients while Redis is away: a failover takes a few seconds


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class InvalidSignature(ApiError):
    status = 403


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class UriTooLong(ApiError):
    status = 414


class UnsupportedMediaType(ApiError):
    status = 415


class Unprocessable(ApiError):
    status = 422


def error_response(status: int, message: str | None, /, **details: Any) -> Response:
    """A JSON error answer. Needs no app context: the webhook answers outside Flask's dispatch."""
    response = Response(compact_json({"error": message, **details}) + "\n", status=status, mimetype="application/json")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="answerback"'
    return response


def error_answer(exc: Exception, max_body_bytes: int | None, content_length: int | None = None) -> Response:
    """The answer to what a view raised: the one mapping of exceptions to JSON errors, for
    Flask's views (init_app) and the webhook (receiver/callbacks.py) alike. An unexpected
    error is logged with its traceback."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.message, **exc.details)
    if isinstance(exc, RequestEntityTooLarge):
        log.warning(
            "request body of %s bytes refused: MAX_BODY_BYTES is %s",
            content_length if content_length is not None else "more than MAX_BODY_BYTES",
            max_body_bytes,
        )
        return error_response(413, f"request body is larger than {max_body_bytes} bytes")
    if isinstance(exc, HTTPException):
        response = error_response(exc.code or 500, exc.description)
        allowed = getattr(exc, "valid_methods", None)  # MethodNotAllowed's
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response
    if isinstance(exc, OUTAGE):
        log.error("Redis unavailable: %s", exc if isinstance(exc, WriteRefused) else type(exc).__name__)
        response = error_response(503, "storage unavailable; retry later")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    if isinstance(exc, RedisError):  # answered, and not an outage: a bug or bad data, no retry mends it
        log.error("Redis refused the command: %s: %s", type(exc).__name__, exc)
        return error_response(500, "internal error")
    log.error("unexpected error", exc_info=exc)
    return error_response(500, "internal error")


def init_app(app: Flask) -> None:
    @app.errorhandler(Exception)
    def api_error(exc: Exception) -> Response:
        return error_answer(exc, app.config["MAX_CONTENT_LENGTH"], request.content_length)

    @app.after_request
    def finish_body(response: Response) -> Response:
        if not body_finished(request):
            response.headers["Connection"] = "close"
        return response


DISCARD_LIMIT = 1 << 20


def body_finished(request: Request) -> bool:
    """Read (and drop) what is left of a body the view did not read, up to 1 MiB, so the
    client gets to read our answer and the connection can be kept alive. Answers False
    when more is left: the connection must then be closed (gunicorn 27 ignores an app's
    `Connection: close`; its gevent worker drains the rest of the body before the next
    request, see test_keep_alive_survives_an_unread_large_body in tests/test_fuzz_regressions.py)."""
    read = request.__dict__.get("stream")  # werkzeug's stream, if the view read the body
    if read is not None and request.content_length is not None and read.is_exhausted:
        return True  # read to its Content-Length (the usual case): nothing left to drain
    stream, left = request.environ.get("wsgi.input"), DISCARD_LIMIT
    if stream is None or (not request.content_length and "chunked" not in request.headers.get("Transfer-Encoding", "")):
        return True
    try:
        while left > 0:
            chunk = stream.read(min(65536, left))
            if not chunk:
                return True
            left -= len(chunk)
        return not stream.read(1)
    except OSError:
        return False
