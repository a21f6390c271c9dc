"""Domain exceptions raised by views, and the one place that maps them to JSON answers."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


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


class NotFound(ApiError):
    status = 404


class UnsupportedMediaType(ApiError):
    status = 415


class Unprocessable(ApiError):
    status = 422


def error_response(status: int, message: str, **details: Any):
    body = {"error": message, **details}
    response = jsonify(body)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="answerback"'
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return error_response(exc.status, exc.message, **exc.details)

    @app.errorhandler(413)
    def too_large(exc: HTTPException):
        _discard_body()
        return error_response(413, f"request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        response = error_response(exc.code or 500, exc.description)
        if getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(RedisError)
    def redis_down(exc: RedisError):
        log.error("Redis unavailable: %s", type(exc).__name__)
        return error_response(503, "storage unavailable; retry later")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unexpected error")
        return error_response(500, "internal error")


DISCARD_LIMIT = 1 << 20


def _discard_body() -> None:
    """Read (and drop) a refused body up to 1 MiB, so the client gets to read our 413
    instead of a connection reset; a larger one is cut off by closing the connection."""
    stream, left = request.environ.get("wsgi.input"), DISCARD_LIMIT
    try:
        while stream is not None and left > 0 and (chunk := stream.read(min(65536, left))):
            left -= len(chunk)
    except OSError:
        pass
