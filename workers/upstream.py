"""The upstream API client: one connection pool per worker process, and what each answer means.

urllib3 rather than httpx: per send it costs about a third of the CPU (bench/README.md,
"Profiling"), and everything a send needs that httpx worked out per request (the proxy
from the environment, the Authorization header, the account's URL) is worked out once here.
Without a proxy, sends go straight to the one connection pool of the upstream's host
(PoolManager's per-request routing cost about an eighth of a send).
"""
from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import certifi
import urllib3
from urllib3.exceptions import (ConnectTimeoutError, EmptyPoolError, HTTPError, NewConnectionError, ProxyError,
                                SSLError)

from config import Settings
from store.outbox import Claimed

ASYNC_SPAWNED = "async api spawned"
# Failures before the request left: safe to send again, whatever the method.
SAFE_TO_RETRY = (NewConnectionError, ConnectTimeoutError, EmptyPoolError, ProxyError, SSLError)


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
    """Keep-alive connections shared by the process's send threads (urllib3's pool is a
    lock-free LIFO queue). The proxy comes from HTTPS_PROXY / HTTP_PROXY / ALL_PROXY unless
    NO_PROXY names the upstream's host, as curl and httpx read them."""

    def __init__(self, settings: Settings) -> None:
        self.account_url = f"{settings.plivo_api_url}Account/{settings.plivo_auth_id}/"
        self.headers = {**urllib3.make_headers(basic_auth=f"{settings.plivo_auth_id}:{settings.plivo_auth_token}"),
                        "User-Agent": "answerback/1"}
        threads = settings.send_concurrency + settings.calls_in_flight
        options: dict[str, Any] = {
            "maxsize": threads, "retries": False, "ca_certs": certifi.where(),
            "timeout": urllib3.Timeout(connect=settings.plivo_timeout, read=settings.plivo_timeout)}
        self.json_headers = {**self.headers, "Content-Type": "application/json"}
        proxy = environment_proxy(settings.plivo_api_url)
        if proxy:
            auth = urllib3.util.parse_url(proxy).auth
            headers = urllib3.make_headers(proxy_basic_auth=auth) if auth else None
            self.pool: urllib3.PoolManager = urllib3.ProxyManager(proxy, proxy_headers=headers, **options)
            self.opener, self.base = self.pool, self.account_url
        else:
            self.pool = urllib3.PoolManager(**options)
            self.opener = self.pool.connection_from_url(self.account_url)
            self.base = urlsplit(self.account_url).path

    def send(self, item: Claimed, callback_url: str) -> Verdict:
        args = {**item.params, "callback_url": callback_url, "callback_method": item.callback_method}
        url = self.base + item.path
        try:
            if item.method == "POST":
                body = json.dumps(args, separators=(",", ":")).encode()
                answer = self.opener.urlopen("POST", url, body=body, headers=self.json_headers)
            else:
                answer = self.opener.urlopen(item.method, f"{url}?{query(args)}", headers=self.headers)
        except SAFE_TO_RETRY as exc:
            return Verdict("retry", error=_transport_error("could not reach the upstream", exc))
        except HTTPError as exc:
            error = _transport_error("no answer from the upstream after sending", exc)
            return Verdict("unknown" if item.method == "POST" else "retry", error=error)
        return classify(answer.status, answer.data, answer.headers.get("Retry-After"))

    def close(self) -> None:
        self.pool.clear()


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url`, or None (none set, or NO_PROXY covers its host)."""
    parts = urlsplit(url)
    if urllib.request.proxy_bypass_environment(parts.hostname or ""):
        return None
    proxies = urllib.request.getproxies_environment()
    return proxies.get(parts.scheme) or proxies.get("all")


def query(args: dict[str, Any]) -> str:
    """Query-string parameters written as httpx writes them: lists repeat their key,
    booleans are true/false, None is empty."""
    def text(value: Any) -> str:
        if value is True or value is False:
            return "true" if value else "false"
        return "" if value is None else str(value)
    pairs = [(k, text(v)) for k, value in args.items() for v in (value if isinstance(value, list) else [value])]
    return urlencode(pairs)


def classify(status: int, content: bytes, retry_after: str | None = None) -> Verdict:
    body = _body(content)
    if 200 <= status < 300:
        if isinstance(body, dict) and body.get("message") == ASYNC_SPAWNED and body.get("api_id"):
            return Verdict("accepted", api_id=str(body["api_id"]))
        return Verdict("completed", body=body if body is not None else {})
    error = {"reason": "upstream answered an error", "status": status, "body": body}
    if status == 429 or status >= 500:
        return Verdict("retry", error=error, retry_after=retry_after)
    return Verdict("failed", error=error)


def _body(content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return content.decode("utf-8", "replace")[:4096]


def _transport_error(reason: str, exc: Exception) -> dict[str, Any]:
    return {"reason": reason, "exception": type(exc).__name__}
