"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from answerback_client.base import BaseClient
from answerback_client.errors import AnswerbackError
from answerback_client.protocol import (
    Batch,
    Call,
    Operation,
    Pager,
    Pause,
    bulk_path,
    deadline_after,
    request_path,
    result_path,
    resume,
    retry_body,
    seconds_left,
    split_item,
    submission_body,
)
from answerback_client.records import BulkRetry, Delivery, Record, Timeline

T = TypeVar("T")


@dataclass(frozen=True)
class Request(Record):
    """A record that can wait for its own end."""

    client: Client | None = field(default=None, repr=False, compare=False)

    def wait(self, timeout: float | None = 60.0) -> Request:
        """Long-poll until the request is final or `timeout` seconds pass (None: no limit);
        answers the record as it then stands (check `.finished`)."""
        assert self.client is not None, "only a Request a Client made can wait"
        return self.client.wait(self.request_id, timeout)


class Client(BaseClient):
    """Answerback from Python: `Client(url, api_key)`; see BaseClient for the settings.
    Thread-safe; use it as a context manager or `close()` it."""

    record_type = Request

    def __init__(self, url: str | None = None, api_key: str | None = None, **settings: Any) -> None:
        super().__init__(url, api_key, **settings)
        self._http = httpx.Client(**self._http_options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        callback_method: str | None = None,
        callback_timeout: int | None = None,
        notify_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Request:
        """Submit an upstream request; answers at once with it `queued` (or the earlier one,
        `replayed`, for an Idempotency-Key used before)."""
        body = submission_body(
            method,
            path,
            params,
            callback_method=callback_method,
            callback_timeout=callback_timeout,
            notify_url=notify_url,
        )
        return self._record(self._run(self._ops.submit(body, idempotency_key)))

    def get(self, request_id: str, wait: float = 0) -> Request:
        """The request's record; with `wait`, held until it is final or `wait` seconds pass."""
        return self._read(request_path(request_id), wait)

    def result(self, api_id: str, wait: float = 0) -> Request:
        """The record of the request the upstream gave `api_id`; `wait` as for `get`."""
        return self._read(result_path(api_id), wait)

    def wait(self, request_id: str, timeout: float | None = 60.0) -> Request:
        return self._record(self._run(self._ops.wait(request_path(request_id), timeout)))

    def deliveries(self, request_id: str) -> list[Delivery]:
        """Every distinct callback delivery of the request, oldest first."""
        return self._deliveries(self._run(self._ops.read(request_path(request_id) + "/deliveries")))

    def events(self, request_id: str) -> Timeline:
        """The request's timeline: what happened to it, oldest first (iterate it for its events)."""
        return self._timeline(self._run(self._ops.read(request_path(request_id) + "/events")))

    def requests(
        self,
        status: str | None = None,
        limit: int | None = None,
        *,
        q: str | None = None,
        path: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> Iterator[Request]:
        """This key's requests, newest first, fetched page by page as you iterate; at most
        `limit` of them (None: all). Filters (AND): `q` one exact request id, api_id or
        Idempotency-Key; `path` the exact upstream path; `since`/`until` ISO 8601 times,
        inclusive, on submitted_at."""
        pager = Pager(status, limit, q=q, path=path, since=since, until=until)
        while (call := pager.call()) is not None:
            for data in pager.take(self._run(self._ops.send(call))):
                yield self._record_of(data)

    def retry(self, request_id: str) -> Request:
        """Submit a failed or expired request again as a new request (its `retry_of` names this
        one). Raises Conflict when it is not failed or expired, or was retried already (then
        its `retried_as` names the retry)."""
        return self._record(self._run(self._ops.send(Call("POST", request_path(request_id) + "/retry"))))

    def retry_matching(
        self,
        status: str | None = None,
        path: str | None = None,
        since: str | None = None,
        until: str | None = None,
        *,
        preview: bool = False,
    ) -> BulkRetry:
        """Retry every failed or expired request (`status`: one of them) the filters match, at
        most 10,000; the workers do it. `preview`: only count them."""
        call = Call("POST", "/v1/requests/retry", json=retry_body(status, path, since, until, preview))
        return BulkRetry.from_json(self._run(self._ops.send(call)).json())

    def retry_progress(self, bulk_id: str) -> BulkRetry:
        """A bulk retry as it stands (status running or done, retried, skipped)."""
        return BulkRetry.from_json(self._run(self._ops.read(bulk_path(bulk_id))).json())

    def submit_many(
        self, items: Iterable[dict[str, Any]], concurrency: int = 8, on_result: Callable[[Any], None] | None = None
    ) -> list[Request | AnswerbackError]:
        """Submit every item (a submission body, optionally with `idempotency_key`), `concurrency`
        at a time. Answers, in item order, each one's Request or the error that refused it;
        `on_result` is called with each as it comes (from worker threads)."""

        def one(item: dict[str, Any]) -> Request:
            return self._record(self._run(self._ops.submit(*split_item(item))))

        return self._each(one, items, concurrency, on_result)

    def wait_many(
        self,
        requests: Iterable[Record],
        timeout: float | None = 60.0,
        concurrency: int = 8,
        on_result: Callable[[Any], None] | None = None,
    ) -> list[Request | AnswerbackError]:
        """Wait for each request as `Request.wait` does, `concurrency` at a time."""
        deadline = deadline_after(timeout)
        return self._each(lambda r: self.wait(r.request_id, seconds_left(deadline)), requests, concurrency, on_result)

    def _read(self, path: str, wait: float) -> Request:
        operation = self._ops.wait(path, wait) if wait else self._ops.read(path)
        return self._record(self._run(operation))

    def _each(
        self,
        work: Callable[[Any], Request],
        items: Iterable[Any],
        concurrency: int,
        on_result: Callable[[Any], None] | None,
    ) -> list[Request | AnswerbackError]:
        batch = Batch()

        def one(item: Any) -> Request | AnswerbackError:
            try:
                outcome = batch.stopped or work(item)
            except AnswerbackError as exc:
                outcome = batch.settle(exc)
            if on_result:
                on_result(outcome)
            return outcome

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(one, items))

    def _run(self, operation: Operation[T]) -> T:
        try:
            step = next(operation)
            while True:
                step = resume(operation, self._perform(step))
        except StopIteration as done:
            return done.value

    def _perform(self, step: Call | Pause) -> httpx.Response | httpx.TransportError | None:
        if isinstance(step, Pause):
            time.sleep(step.seconds)
            return None
        try:
            return self._http.request(**step.arguments(self.timeout))
        except httpx.TransportError as exc:
            return exc
