"""The asynchronous answer: where it goes, and the HTTP request that carries it.

Plivo does not document the callback's body; the sandbox sends the body the
synchronous call would have answered. POST sends it as JSON (or form-encoded),
GET appends it to the callback URL's query. Form and query can only carry flat
text, so nested values are flattened: `meta.limit=20`, a list of scalars
becomes repeated keys, list items that are objects get their index
(`objects.0.id`), true/false stay `true`/`false` and null becomes empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from plivo.utils.signature_v3 import string_format
from urllib3.util import parse_url

from sandbox.api_errors import BadRequest
from sandbox.signing import signature_headers

CALLBACK_ARGS = ("callback_url", "callback_method")
Fields = list[tuple[str, str]]


@dataclass(frozen=True)
class CallbackTarget:
    url: str
    method: str = "POST"

    @classmethod
    def split_from(cls, args: dict[str, Any]) -> tuple[dict[str, Any], CallbackTarget | None]:
        """The arguments without the callback ones (never stored), and the target if any."""
        rest = {key: value for key, value in args.items() if key not in CALLBACK_ARGS}
        if args.get("callback_url") is None:
            return rest, None
        return rest, cls(_checked_url(args["callback_url"]), _checked_method(args.get("callback_method")))


@dataclass(frozen=True)
class Outgoing:
    """One HTTP request to a callback URL, signed and ready to send."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None = None


@dataclass(frozen=True)
class Callback:
    target: CallbackTarget
    body: dict[str, Any]

    def outgoing(self, auth_token: str, post_format: str) -> Outgoing:
        """Encoded afresh for every delivery, so each copy gets its own nonce."""
        url = as_sent(self.target.url)
        if self.target.method == "GET":
            return self._in_query(url, auth_token)
        return self._as_form(url, auth_token) if post_format == "form" else self._as_json(url, auth_token)

    def _in_query(self, url: str, auth_token: str) -> Outgoing:
        fields = flatten(self.body)
        url = as_sent(with_query(url, fields))
        return Outgoing("GET", url, signature_headers(auth_token, "GET", url, as_params(fields)))

    def _as_form(self, url: str, auth_token: str) -> Outgoing:
        fields = flatten(self.body)
        headers = signature_headers(auth_token, "POST", url, as_params(fields))
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return Outgoing("POST", url, headers, urlencode(fields).encode("ascii"))

    def _as_json(self, url: str, auth_token: str) -> Outgoing:
        headers = signature_headers(auth_token, "POST", url, signable(self.body))
        headers["Content-Type"] = "application/json"
        return Outgoing("POST", url, headers, json.dumps(self.body).encode("utf-8"))


def flatten(value: Any, prefix: str = "") -> Fields:
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in flatten(item, _join(prefix, key))]
    if isinstance(value, list):
        return [
            pair
            for index, item in enumerate(value)
            for pair in flatten(item, _join(prefix, str(index)) if _nested(item) else prefix)
        ]
    return [(prefix, _text(value))]


def as_params(fields: Fields) -> dict[str, list[str]]:
    """Fields the way a receiver parses a form or query: every key to its list of values."""
    params: dict[str, list[str]] = {}
    for key, value in fields:
        params.setdefault(key, []).append(value)
    return params


def signable(body: Any) -> Any:
    """A JSON body in the shape the SDK's signer can encode.

    The SDK signs nested objects recursively and lists of scalars sorted. For a
    list item that is an object, array or null Plivo documents nothing; the SDK
    signs one such item as Python's str() of it and fails on two (it sorts them).
    The sandbox renders every such item that way first, so the SDK can sort the
    texts: the SDK's own result where it has one (receiver/signature.py agrees).
    """
    if isinstance(body, dict):
        return {key: signable(value) for key, value in body.items()}
    if isinstance(body, list):
        return [item if _scalar(item) else _sdk_text(item) for item in body]
    return body


def _sdk_text(item: Any) -> str:
    return str(string_format(item))


def as_sent(url: str) -> str:
    """The URL as it goes on the wire (escaped, no fragment), under the caller's own spelling of the host.

    What gets signed must be what the receiver sees in its request line; the host
    part it takes from its configured public URL, which is what it gave us. The
    courier sends it as given, escaped here by urllib3 (which writes
    `%2f` as `%2F`; sending the result again leaves it as it is).
    """
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parse_url(url).request_uri}"


def with_query(url: str, fields: Fields) -> str:
    """The callback URL with fields appended, keeping the query it already has (`?rid=...`)."""
    base = url.partition("#")[0]
    if not fields:
        return base
    separator = "" if base.endswith(("?", "&")) else "&" if "?" in base else "?"
    return base + separator + urlencode(fields)


def _checked_url(url: Any) -> str:
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadRequest("callback_url must be an absolute http or https URL")
    return url


def _checked_method(method: Any) -> str:
    if method is None:
        return "POST"
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise BadRequest("callback_method must be GET or POST")
    return method.upper()


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _nested(value: Any) -> bool:
    return isinstance(value, (dict, list))


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float))


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)
