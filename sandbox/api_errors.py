"""The one place that turns failures into Plivo-style JSON error answers."""

from __future__ import annotations

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from sandbox.reply import Reply, new_api_id


class ApiError(Exception):
    """A request the simulated API refuses; `reply` is what it answers."""

    status = 400

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.api_id = new_api_id()
        self.reply = Reply(status or self.status, {"api_id": self.api_id, "error": message}, dict(headers or {}))


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401

    def __init__(self) -> None:
        super().__init__("authentication failed")


class NotFound(ApiError):
    status = 404

    def __init__(self) -> None:
        super().__init__("not found")


class MethodNotAllowed(ApiError):
    status = 405


class UnsupportedMediaType(ApiError):
    status = 415


def reply_response(reply: Reply) -> Response:
    """Flask response for a Reply; a body-less reply (204) stays body-less."""
    response = jsonify(reply.body) if reply.body is not None else Response(status=reply.status)
    response.status_code = reply.status
    response.headers.update(reply.headers)
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, lambda error: reply_response(error.reply))
    app.register_error_handler(HTTPException, _http_error)


def _http_error(error: HTTPException) -> Response:
    """Routing errors (unknown path, wrong method) answer JSON like the rest of the API."""
    response = jsonify(api_id=new_api_id(), error=error.name.lower())
    response.status_code = error.code or 500
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response
