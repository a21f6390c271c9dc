"""The upstream API client: libcurl handles shared by the send threads, and what each answer means.

pycurl (libcurl) rather than urllib3: the HTTP exchange, its parsing and the connection's
keep-alive happen in C with the GIL released, at a fraction of urllib3's CPU per send
(bench/README.md, "The workers' upstream client"). Everything a send needs that does not
change (the proxy from the environment, the Authorization header, the account's URL) is
worked out once here.

Two libcurl behaviours are chosen on purpose, since a POST that may have acted upstream
must never be sent twice (docs/architecture.md, "Safe retries"):

- libcurl sends a request again, by itself, when a reused connection dies before any answer
  came. It can do that only by rewinding the body, and a body given by a read function
  without a seek function cannot be rewound: such a POST fails instead (CURLE_SEND_FAIL_REWIND),
  and is `unknown`. (A body given whole, POSTFIELDS, would be sent again silently.) A request
  whose body had not left yet, and a GET or DELETE, may go again on a fresh connection: the
  upstream cannot have acted on it.
- A connection idle for IDLE_CONNECTION_S is not used again (CURLOPT_MAXAGE_CONN): servers
  close idle keep-alive connections (commonly after 5 s or more), and a request going out
  on one just as the server closes it would be lost on the wire.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import certifi
import pycurl

from config import Settings
from store.outbox import Claimed

ASYNC_SPAWNED = "async api spawned"
IDLE_CONNECTION_S = 4


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
    """libcurl handles, each with its keep-alive connection, as many as sends ever ran at once.
    A send takes the one used last (a lock-free LIFO stack, as urllib3's pool does), whichever
    thread runs it: the send threads take turns, and with a handle each, a moderate rate spread
    over them left every connection idle past IDLE_CONNECTION_S. The proxy comes from HTTPS_PROXY /
    HTTP_PROXY / ALL_PROXY unless NO_PROXY names the upstream's host, as Python reads them
    (libcurl's own reading of the environment is turned off: it ignores HTTP_PROXY)."""

    def __init__(self, settings: Settings) -> None:
        self.account_url = f"{settings.plivo_api_url}Account/{settings.plivo_auth_id}/"
        self.credentials = f"{settings.plivo_auth_id}:{settings.plivo_auth_token}"
        self.timeout_ms = max(1, int(settings.plivo_timeout * 1000))
        self.proxy = environment_proxy(settings.plivo_api_url) or ""
        self._idle: list[pycurl.Curl] = []  # not in use, the one used last at the end
        self._handles: list[pycurl.Curl] = []  # all of them, for close
        self._lock = threading.Lock()

    def _take(self) -> pycurl.Curl:
        try:
            return self._idle.pop()  # atomic: no two sends get the same handle
        except IndexError:
            handle = pycurl.Curl()
            with self._lock:
                self._handles.append(handle)
            return handle

    def send(self, item: Claimed, callback_url: str) -> Verdict:
        curl = self._take()
        try:
            return self._exchange(curl, item, callback_url)
        finally:
            self._idle.append(curl)

    def _exchange(self, curl: pycurl.Curl, item: Claimed, callback_url: str) -> Verdict:
        args = {**item.params, "callback_url": callback_url, "callback_method": item.callback_method}
        url = self.account_url + item.path
        curl.reset()  # options only: the handle keeps its connection
        self._options(curl)
        if item.method == "POST":
            body = json.dumps(args, separators=(",", ":")).encode()
            curl.setopt(pycurl.URL, url)
            curl.setopt(pycurl.POST, 1)
            curl.setopt(pycurl.POSTFIELDSIZE, len(body))
            curl.setopt(pycurl.READFUNCTION, io.BytesIO(body).read)  # no seek function: never resent
            curl.setopt(pycurl.HTTPHEADER, ["Content-Type: application/json", "Expect:"])
        else:
            curl.setopt(pycurl.URL, f"{url}?{query(args)}")
            if item.method != "GET":
                curl.setopt(pycurl.CUSTOMREQUEST, item.method)
        content: list[bytes] = []
        head: list[bytes] = []
        curl.setopt(pycurl.WRITEFUNCTION, content.append)
        curl.setopt(pycurl.HEADERFUNCTION, head.append)
        try:
            curl.perform()
        except pycurl.error as exc:
            code = exc.args[0]
            if nothing_left(curl):
                return Verdict("retry", error=_transport_error("could not reach the upstream", code))
            error = _transport_error("no answer from the upstream after sending", code)
            return Verdict("unknown" if item.method == "POST" else "retry", error=error)
        status = curl.getinfo(pycurl.RESPONSE_CODE)
        retry_after = header(head, b"retry-after") if status == 429 or status >= 500 else None
        return classify(status, b"".join(content), retry_after)

    def _options(self, curl: pycurl.Curl) -> None:
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        curl.setopt(pycurl.USERPWD, self.credentials)
        curl.setopt(pycurl.USERAGENT, "answerback/1")
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, self.timeout_ms)
        curl.setopt(pycurl.TIMEOUT_MS, self.timeout_ms)
        curl.setopt(pycurl.MAXAGE_CONN, IDLE_CONNECTION_S)
        curl.setopt(pycurl.CAINFO, certifi.where())
        curl.setopt(pycurl.PROXY_CAINFO, certifi.where())  # an https:// proxy is verified as the upstream is
        curl.setopt(pycurl.PROXY, self.proxy)  # "" is no proxy, whatever libcurl would read
        curl.setopt(pycurl.NOPROXY, "")

    def close(self) -> None:
        with self._lock:
            handles, self._handles, self._idle = self._handles, [], []
        for handle in handles:
            handle.close()


def nothing_left(curl: pycurl.Curl) -> bool:
    """Whether a failed exchange sent none of the request to the upstream: it failed while
    connecting (TCP, TLS, or a proxy that refused the tunnel) or before the request was written."""
    tunnel = curl.getinfo(pycurl.HTTP_CONNECTCODE)
    return curl.getinfo(pycurl.REQUEST_SIZE) == 0 or (tunnel != 0 and not 200 <= tunnel < 300)


def header(lines: list[bytes], name: bytes) -> str | None:
    """A header of the last answer among `lines` (libcurl hands over a proxy's and a 100's too)."""
    value = None
    for line in lines:
        if line.startswith(b"HTTP/"):
            value = None
        else:
            key, sep, rest = line.partition(b":")
            if sep and key.strip().lower() == name:
                value = rest.strip().decode("latin-1")
    return value


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url`, or None (none set, or NO_PROXY covers its host)."""
    parts = urlsplit(url)
    if urllib.request.proxy_bypass_environment(parts.hostname or ""):  # type: ignore[attr-defined]  # undocumented, not in typeshed
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


# libcurl's error codes by name (pycurl.E_OPERATION_TIMEDOUT is 28): a record names the error,
# not libcurl's message, which may quote the proxy's address.
_CURL_ERRORS = {
    value: name[2:]
    for name, value in vars(pycurl).items()
    if name.startswith("E_") and not name.startswith(("E_MULTI_", "E_SHARE_")) and isinstance(value, int)
}


def _transport_error(reason: str, code: int) -> dict[str, Any]:
    return {"reason": reason, "exception": _CURL_ERRORS.get(code, f"curl error {code}")}
