"""What the blocking and the asyncio client share: settings, and turning answers into records."""

from __future__ import annotations

import os
from importlib.metadata import version
from typing import Any

import httpx

from answerback_client.protocol import Backoff, Operations
from answerback_client.records import Delivery, Record, Timeline

DEFAULT_URL = "http://127.0.0.1:8000"  # where `python3 manage.py run` serves
VERSION = version("answerback-client")  # from client/pyproject.toml, the one place it is written


class BaseClient:
    """`url` and `api_key` default to ANSWERBACK_URL and ANSWERBACK_API_KEY. `timeout`: seconds
    to connect and for each read (a `?wait` adds its own seconds to the read); `retries`:
    further attempts after connection errors and 429/502/503/504, waiting `backoff` * 2^n
    seconds (full jitter, at most `max_backoff`) or what Retry-After says."""

    record_type: type[Record] = Record

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
    ) -> None:
        self.url = (url or os.environ.get("ANSWERBACK_URL") or DEFAULT_URL).rstrip("/")
        key = api_key or os.environ.get("ANSWERBACK_API_KEY")
        if not key:
            raise ValueError("no API key: pass api_key or set ANSWERBACK_API_KEY")
        self.timeout = timeout
        self._ops = Operations(Backoff(retries, backoff, max_backoff))
        self._http_options: dict[str, Any] = {
            "base_url": self.url,
            "timeout": timeout,
            "headers": {"Authorization": f"Bearer {key}", "User-Agent": f"answerback-client/{VERSION}"},
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _record(self, response: httpx.Response) -> Any:
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        return self._record_of(response.json(), replayed=replayed)

    def _record_of(self, data: dict[str, Any], **extra: Any) -> Any:
        return self.record_type.from_json(data, client=self, **extra)

    @staticmethod
    def _deliveries(response: httpx.Response) -> list[Delivery]:
        return [Delivery.from_json(d) for d in response.json()["objects"]]

    @staticmethod
    def _timeline(response: httpx.Response) -> Timeline:
        return Timeline.from_json(response.json())
