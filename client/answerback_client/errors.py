"""What can go wrong talking to Answerback, as exceptions a caller can tell apart."""

from __future__ import annotations

from typing import Any

import httpx


class AnswerbackError(Exception):
    """The base of every error the client raises; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message, self.status, self.body = message, status, body

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


class Unauthorized(AnswerbackError):
    """401 or 403: the API key is missing, wrong, or not allowed."""


class NotFound(AnswerbackError):
    """404: no such request for this API key (another key's requests are not found either)."""


class InvalidRequest(AnswerbackError):
    """400, 413, 415 or 422: the server refused the input and wrote nothing."""

    @property
    def fields(self) -> dict[str, str]:
        """Field errors by name (e.g. `{"path": "must be relative ..."}`), when the server gave them."""
        fields = self.body.get("fields") if isinstance(self.body, dict) else None
        return fields if isinstance(fields, dict) else {}

    def __str__(self) -> str:
        details = "; ".join(f"{name}: {problem}" for name, problem in self.fields.items())
        return super().__str__() + (f" — {details}" if details else "")


class Conflict(AnswerbackError):
    """409: not possible in the request's state (e.g. retrying one that is not failed or expired)."""

    @property
    def retried_as(self) -> str | None:
        """The request that already retried this one, when that is why."""
        value = self.body.get("retried_as") if isinstance(self.body, dict) else None
        return value if isinstance(value, str) else None


class Unavailable(AnswerbackError):
    """503 (or 429, 502, 504) after the retries, or the server could not be reached at all."""


BY_STATUS: dict[int, type[AnswerbackError]] = {
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    400: InvalidRequest,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    429: Unavailable,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_for(response: httpx.Response) -> AnswerbackError:
    """The exception for an error answer, carrying the server's `{"error": ...}` message."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("error") if isinstance(body, dict) else None
    if not isinstance(message, str):
        message = response.text.strip()[:200] or response.reason_phrase
    return BY_STATUS.get(response.status_code, AnswerbackError)(message, response.status_code, body)


def unreachable(exc: httpx.TransportError) -> AnswerbackError:
    """A transport failure as an exception; only the ones worth retrying are `Unavailable`."""
    if isinstance(exc, RETRYABLE_TRANSPORT):
        return Unavailable(f"cannot reach Answerback: {type(exc).__name__}: {exc}".rstrip(": "))
    return AnswerbackError(f"{type(exc).__name__}: {exc}")


RETRYABLE_TRANSPORT = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ProxyError)
