"""The upstream API client: one pooled HTTP client per worker process, and what each answer means."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from config import Settings
from store.outbox import Claimed

ASYNC_SPAWNED = "async api spawned"
SAFE_TO_RETRY = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)


@dataclass(frozen=True)
class Verdict:
    """accepted: api_id known, the callback will come; completed: a synchronous answer;
    failed: refused; retry: safe to send again; unknown: may have acted, never resend."""
    kind: Literal["accepted", "completed", "failed", "retry", "unknown"]
    api_id: str = ""
    body: Any = None
    error: dict[str, Any] = field(default_factory=dict)
    retry_after: str | None = None


class PlivoClient:
    """One keep-alive HTTP client per send thread: a shared pool of mostly idle
    connections costs CPU per request and lock waits (encode/httpcore#1035)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.account_url = f"{settings.plivo_api_url}Account/{settings.plivo_auth_id}/"
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    @property
    def http(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(
                auth=(self.settings.plivo_auth_id, self.settings.plivo_auth_token),
                timeout=httpx.Timeout(self.settings.plivo_timeout),
                limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
                headers={"User-Agent": "answerback/1"},
                trust_env=True,  # HTTPS_PROXY, HTTP_PROXY, NO_PROXY
            )
            with self._lock:
                self._clients.append(client)
        return client

    def send(self, item: Claimed, callback_url: str) -> Verdict:
        args = {**item.params, "callback_url": callback_url, "callback_method": item.callback_method}
        url = self.account_url + item.path
        try:
            if item.method == "POST":
                answer = self.http.post(url, json=args)
            else:
                answer = self.http.request(item.method, url, params=args)
        except SAFE_TO_RETRY as exc:
            return Verdict("retry", error=_transport_error("could not reach the upstream", exc))
        except httpx.TransportError as exc:
            error = _transport_error("no answer from the upstream after sending", exc)
            return Verdict("unknown" if item.method == "POST" else "retry", error=error)
        return classify(answer)

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()


def classify(answer: httpx.Response) -> Verdict:
    body = _body(answer)
    if answer.is_success:
        if isinstance(body, dict) and body.get("message") == ASYNC_SPAWNED and body.get("api_id"):
            return Verdict("accepted", api_id=str(body["api_id"]))
        return Verdict("completed", body=body if body is not None else {})
    error = {"reason": "upstream answered an error", "status": answer.status_code, "body": body}
    if answer.status_code == 429 or answer.status_code >= 500:
        return Verdict("retry", error=error, retry_after=answer.headers.get("Retry-After"))
    return Verdict("failed", error=error)


def _body(answer: httpx.Response) -> Any:
    if not answer.content:
        return None
    try:
        return answer.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return answer.text[:4096]


def _transport_error(reason: str, exc: Exception) -> dict[str, Any]:
    return {"reason": reason, "exception": type(exc).__name__}
