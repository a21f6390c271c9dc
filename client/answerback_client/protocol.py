"""What the client says to Answerback and how it reads the answers, written once for the
blocking and the asyncio client alike.

An operation is a generator: it yields the HTTP `Call`s and `Pause`s it needs and is sent
back each answer (or thrown the transport error), so a client only has to drive it
(`Client._run`, `AsyncClient._run`). Retries, backoff, the `?wait` loop and paging live here."""

from __future__ import annotations

import email.utils
import math
import random
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from urllib.parse import quote

import httpx

from answerback_client.errors import AnswerbackError, Unauthorized, Unavailable, error_for, unreachable
from answerback_client.records import FINAL_STATUSES

T = TypeVar("T")
MAX_WAIT = 60  # the most one `?wait` may ask of the server
CAPPED_PAUSE = 1.0  # a wait the server answered at once (`X-Wait-Capped`) is asked again after this
MAX_RETRY_AFTER = 60.0
RETRY_STATUSES = frozenset({429, 502, 503, 504})
BATCH_STOPPERS = (Unauthorized, Unavailable)  # the rest of a batch would meet the same


@dataclass(frozen=True)
class Call:
    """One HTTP request to Answerback; `wait` is how long the server may hold the answer."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    wait: int = 0

    def arguments(self, timeout: float) -> dict[str, Any]:
        """Keyword arguments for `httpx.Client.request` and `httpx.AsyncClient.request`.
        A held answer needs a read timeout longer than the hold."""
        return {
            "method": self.method,
            "url": self.path,
            "params": self.params,
            "json": self.json,
            "headers": self.headers,
            "timeout": httpx.Timeout(timeout, read=timeout + self.wait),
        }


@dataclass(frozen=True)
class Pause:
    seconds: float


Operation = Generator["Call | Pause", "httpx.Response | None", T]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter; `retries` more attempts after the first."""

    retries: int = 6
    base: float = 0.5
    cap: float = 10.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a `Retry-After` header (a number or an HTTP date), if there is one."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


class Operations:
    """Every operation of the client; both clients drive these same generators."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff

    def send(self, call: Call) -> Operation[httpx.Response]:
        """One call, retried on connection errors and 429/502/503/504. Safe for a submission
        only because it always carries an Idempotency-Key (see `submit`)."""
        attempt = 0
        while True:
            try:
                response = cast(httpx.Response, (yield call))  # a Call is answered with its response
            except httpx.TransportError as exc:
                error = unreachable(exc)
                if not isinstance(error, Unavailable) or attempt >= self.backoff.retries:
                    raise error from exc
                yield Pause(self.backoff.delay(attempt))
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.backoff.retries:
                    if response.is_error:
                        raise error_for(response)
                    return response
                yield Pause(self.backoff.delay(attempt, retry_after(response)))
            attempt += 1

    def submit(self, body: dict[str, Any], idempotency_key: str | None) -> Operation[httpx.Response]:
        """Every submission carries an Idempotency-Key (the caller's, or a fresh one kept for
        all its retries), so a retry after a lost answer returns the first request."""
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return (yield from self.send(Call("POST", "/v1/requests", json=body, headers=headers)))

    def read(self, path: str) -> Operation[httpx.Response]:
        return (yield from self.send(Call("GET", path)))

    def wait(self, path: str, timeout: float | None) -> Operation[httpx.Response]:
        """Long-poll `path` (a request or a result) until the request is final or `timeout`
        seconds pass (None: no limit), at most MAX_WAIT per call; answers the last record.
        The server takes whole seconds: a call asks for the time left rounded up."""
        deadline = deadline_after(timeout)
        while True:
            left = seconds_left(deadline)
            seconds = MAX_WAIT if left is None else min(MAX_WAIT, math.ceil(left))
            params = {"wait": seconds} if seconds else None
            response = yield from self.send(Call("GET", path, params=params, wait=seconds))
            record = response.json()
            left = seconds_left(deadline)
            if record.get("status") in FINAL_STATUSES or left == 0:
                return response
            path = request_path(record["request_id"])
            if response.headers.get("X-Wait-Capped") == "true":
                yield Pause(CAPPED_PAUSE if left is None else min(CAPPED_PAUSE, left))


def seconds_left(deadline: float | None) -> float | None:
    """What is left of a shared deadline (a `time.monotonic()` moment; None: no limit)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def deadline_after(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def request_path(request_id: str) -> str:
    return f"/v1/requests/{quote(request_id, safe='')}"


def result_path(api_id: str) -> str:
    return f"/v1/results/{quote(api_id, safe='')}"


def submission_body(method: str, path: str, params: dict[str, Any] | None, **options: Any) -> dict[str, Any]:
    """The JSON body of a submission; options left None (callback_method, callback_timeout,
    notify_url) are left out, so the server's defaults apply."""
    body: dict[str, Any] = {"method": method, "path": path, "params": params or {}}
    return body | {name: value for name, value in options.items() if value is not None}


def retry_body(
    status: str | None, path: str | None, since: str | None, until: str | None, preview: bool
) -> dict[str, Any]:
    """The JSON body of a bulk retry; filters left None are left out."""
    filters = {"status": status, "path": path, "since": since, "until": until}
    return {name: value for name, value in filters.items() if value is not None} | {"preview": preview}


def bulk_path(bulk_id: str) -> str:
    return f"/v1/requests/retry/{quote(bulk_id, safe='')}"


def split_item(item: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A bulk item is a submission body, optionally with its `idempotency_key`."""
    body = dict(item)
    return body, body.pop("idempotency_key", None)


class Pager:
    """Offset paging over `GET /v1/requests`, newest first. A request submitted while we page
    pushes older ones down a place; the ids already given are skipped, so none comes twice."""

    PAGE = 20

    def __init__(self, status: str | None, limit: int | None, **filters: str | None) -> None:
        """`filters`: q, path, since, until, as GET /v1/requests takes them (None: not given)."""
        self.status, self.left = status, limit
        self.filters = {name: value for name, value in filters.items() if value is not None}
        self.offset, self.more = 0, True
        self.seen: set[str] = set()

    def call(self) -> Call | None:
        if not self.more or self.left == 0:
            return None
        params: dict[str, Any] = {"limit": self.PAGE, "offset": self.offset, **self.filters}
        if self.status:
            params["status"] = self.status
        return Call("GET", "/v1/requests", params=params)

    def take(self, response: httpx.Response) -> list[dict[str, Any]]:
        page = response.json()
        objects = page["objects"]
        self.offset += len(objects)
        self.more = bool(page["meta"].get("next")) and bool(objects)
        fresh = [o for o in objects if o["request_id"] not in self.seen]
        if self.left is not None:
            fresh = fresh[: self.left]
            self.left -= len(fresh)
        self.seen.update(o["request_id"] for o in fresh)
        return fresh


class Batch:
    """The outcome of each item of a bulk run. After an Unauthorized or Unavailable the items
    not yet started are not tried: their outcome is the error that stopped the run."""

    def __init__(self) -> None:
        self.stopped: AnswerbackError | None = None

    def settle(self, error: AnswerbackError) -> AnswerbackError:
        if isinstance(error, BATCH_STOPPERS) and self.stopped is None:
            self.stopped = error
        return error


def resume(operation: Operation[T], outcome: httpx.Response | httpx.TransportError | None) -> Call | Pause:
    """Hand an operation what its last step produced and get its next step."""
    if isinstance(outcome, httpx.TransportError):
        return operation.throw(outcome)
    return operation.send(outcome)
