"""The asyncio twin of `Client`: the same methods, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
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
class AsyncRequest(Record):
    """A record that can wait for its own end: `await req.wait(30)`."""

    client: AsyncClient | None = field(default=None, repr=False, compare=False)

    async def wait(self, timeout: float | None = 60.0) -> AsyncRequest:
        assert self.client is not None, "only a Request an AsyncClient made can wait"
        return await self.client.wait(self.request_id, timeout)


class AsyncClient(BaseClient):
    """`Client` for asyncio; `async with AsyncClient(...) as ab:` or `await ab.aclose()`."""

    record_type = AsyncRequest

    def __init__(self, url: str | None = None, api_key: str | None = None, **settings: Any) -> None:
        super().__init__(url, api_key, **settings)
        self._http = httpx.AsyncClient(**self._http_options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        callback_method: str | None = None,
        callback_timeout: int | None = None,
        notify_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncRequest:
        body = submission_body(
            method,
            path,
            params,
            callback_method=callback_method,
            callback_timeout=callback_timeout,
            notify_url=notify_url,
        )
        return self._record(await self._run(self._ops.submit(body, idempotency_key)))

    async def get(self, request_id: str, wait: float = 0) -> AsyncRequest:
        return await self._read(request_path(request_id), wait)

    async def result(self, api_id: str, wait: float = 0) -> AsyncRequest:
        return await self._read(result_path(api_id), wait)

    async def wait(self, request_id: str, timeout: float | None = 60.0) -> AsyncRequest:
        return self._record(await self._run(self._ops.wait(request_path(request_id), timeout)))

    async def deliveries(self, request_id: str) -> list[Delivery]:
        return self._deliveries(await self._run(self._ops.read(request_path(request_id) + "/deliveries")))

    async def events(self, request_id: str) -> Timeline:
        return self._timeline(await self._run(self._ops.read(request_path(request_id) + "/events")))

    async def requests(
        self,
        status: str | None = None,
        limit: int | None = None,
        *,
        q: str | None = None,
        path: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> AsyncIterator[AsyncRequest]:
        pager = Pager(status, limit, q=q, path=path, since=since, until=until)
        while (call := pager.call()) is not None:
            for data in pager.take(await self._run(self._ops.send(call))):
                yield self._record_of(data)

    async def retry(self, request_id: str) -> AsyncRequest:
        return self._record(await self._run(self._ops.send(Call("POST", request_path(request_id) + "/retry"))))

    async def retry_matching(
        self,
        status: str | None = None,
        path: str | None = None,
        since: str | None = None,
        until: str | None = None,
        *,
        preview: bool = False,
    ) -> BulkRetry:
        call = Call("POST", "/v1/requests/retry", json=retry_body(status, path, since, until, preview))
        return BulkRetry.from_json((await self._run(self._ops.send(call))).json())

    async def retry_progress(self, bulk_id: str) -> BulkRetry:
        return BulkRetry.from_json((await self._run(self._ops.read(bulk_path(bulk_id)))).json())

    async def submit_many(
        self, items: Iterable[dict[str, Any]], concurrency: int = 8, on_result: Callable[[Any], None] | None = None
    ) -> list[AsyncRequest | AnswerbackError]:
        async def one(item: dict[str, Any]) -> AsyncRequest:
            return self._record(await self._run(self._ops.submit(*split_item(item))))

        return await self._each(one, items, concurrency, on_result)

    async def wait_many(
        self,
        requests: Iterable[Record],
        timeout: float | None = 60.0,
        concurrency: int = 8,
        on_result: Callable[[Any], None] | None = None,
    ) -> list[AsyncRequest | AnswerbackError]:
        deadline = deadline_after(timeout)
        return await self._each(
            lambda r: self.wait(r.request_id, seconds_left(deadline)), requests, concurrency, on_result
        )

    async def _read(self, path: str, wait: float) -> AsyncRequest:
        operation = self._ops.wait(path, wait) if wait else self._ops.read(path)
        return self._record(await self._run(operation))

    async def _each(
        self,
        work: Callable[[Any], Awaitable[AsyncRequest]],
        items: Iterable[Any],
        concurrency: int,
        on_result: Callable[[Any], None] | None,
    ) -> list[AsyncRequest | AnswerbackError]:
        batch, slots = Batch(), asyncio.Semaphore(max(1, concurrency))

        async def one(item: Any) -> AsyncRequest | AnswerbackError:
            async with slots:
                try:
                    outcome = batch.stopped or await work(item)
                except AnswerbackError as exc:
                    outcome = batch.settle(exc)
            if on_result:
                on_result(outcome)
            return outcome

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def _run(self, operation: Operation[T]) -> T:
        try:
            step = next(operation)
            while True:
                step = resume(operation, await self._perform(step))
        except StopIteration as done:
            return done.value

    async def _perform(self, step: Call | Pause) -> httpx.Response | httpx.TransportError | None:
        if isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
            return None
        try:
            return await self._http.request(**step.arguments(self.timeout))
        except httpx.TransportError as exc:
            return exc
