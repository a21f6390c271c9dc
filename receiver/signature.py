"""Plivo callback signatures (V3, and the deprecated V2), checked without the SDK.

A callback is trusted only when it proves Plivo sent it. The official SDK's
checker (`plivo.utils.validate_v3_signature`) is the reference and this module
agrees with it, but it raises on inputs a public endpoint must survive (junk
headers, mixed lists, non-ASCII URLs on CPython before 3.11.9); here every
odd input is simply "not signed".

`url` is the full public URL the sender called: the configured public base
URL + the request path as sent + "?" + the raw, still percent-encoded query
string. Behind a proxy or load balancer the URL the WSGI server sees (say
http://127.0.0.1:8000/...) is not the one Plivo signed, so never rebuild it
from the request's own host.

Decisions where Plivo documents nothing (each one tested):

- Header: candidates are split on "," and surrounding spaces and tabs are
  stripped ("sig1, sig2" passes; the SDK would reject sig2). A real signature
  contains neither, so stripping can only accept what the SDK would accept
  without the spaces; it cannot let a forged signature through.
- Text is signed as UTF-8, encoded once. The SDK reads percent-decoded query
  bytes and the nonce's bytes as Latin-1 and encodes them again; that reading
  is accepted too (for the whole message at once), for GET and POST alike,
  because both build the query part with the same code. Body parameters are
  only ever encoded once, as the SDK does. A query that is not UTF-8 has only
  the SDK's reading.
- The method is compared case-insensitively, as the SDK does; only GET and
  POST exist. An empty token, nonce or signature never verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import ParseResult, parse_qsl, unquote_to_bytes, urlparse, urlunparse

METHODS = ("GET", "POST")
_SDK_READING = "latin-1"


def v3_message(method: str, url: str, params: Mapping[str, Any], query_encoding: str = "utf-8") -> bytes:
    """The URL string Plivo signs before "." + nonce (Plivo's signature V3 documentation; the SDK's
    `plivo/utils/signature_v3.py`), public so signers and checks share it.

    `query_encoding` says how percent-decoded query bytes are read: "utf-8"
    (text encoded once; raises UnicodeDecodeError if they are not UTF-8) or
    "latin-1" (the SDK's reading, which encodes non-ASCII twice).
    """
    method = method.upper()
    if method not in METHODS:
        raise ValueError(f"Plivo signs only GET and POST callbacks, not {method!r}")
    parsed = urlparse(url)
    base, query = _base_url(parsed), _parse_query(parsed.query, query_encoding)
    if method == "GET":
        return _with_query(base, _query_string({**params, **query}))
    if not params:
        return _with_query(base, _query_string(query))
    query_text = _query_string(query)
    return (base + "?" + query_text + ("." if query_text else "") + _params_string(params)).encode()


def sign_v3(token: str, method: str, url: str, nonce: str, params: Mapping[str, Any] | None = None) -> str:
    """The X-Plivo-Signature-V3 value Plivo would send: for the sandbox, clients and tests."""
    message = v3_message(method, url, params or {}) + b"." + nonce.encode()
    return _digest(token, message).decode()


def verify_v3(
    token: str,
    method: str,
    url: str,
    nonce: str | None,
    signatures: str | None,
    params: Mapping[str, Any] | None = None,
) -> bool:
    """Whether Plivo signed this callback: any comma-separated candidate may match.

    Returns False rather than raising on junk, so a view needs no try/except.
    """
    params = {} if params is None else params
    if not (
        isinstance(nonce, str)
        and isinstance(signatures, str)
        and isinstance(params, Mapping)
        and _usable(token, method, url, nonce, signatures)
    ):
        return False
    if method.upper() not in METHODS:
        return False
    try:
        # Which reading matched is public (it depends on the URL, not the token): stop at the first.
        return any(
            _any_matches(signatures, {_digest(token, message)}) for message in _v3_readings(method, url, nonce, params)
        )
    except (TypeError, ValueError, RecursionError):
        return False


def verify_v2(token: str, url: str, nonce: str | None, signatures: str | None) -> bool:
    """For senders still on the deprecated V2 scheme, which signs URL-without-query + nonce."""
    if not (isinstance(nonce, str) and isinstance(signatures, str) and _usable(token, url, nonce, signatures)):
        return False
    try:
        expected = _digest(token, _base_url(urlparse(url)).encode() + nonce.encode())
    except ValueError:
        return False
    return _any_matches(signatures, {expected})


def _v3_readings(method: str, url: str, nonce: str, params: Mapping[str, Any]) -> Iterator[bytes]:
    """The signed message as text encoded once, then as the SDK reads it (it is the reference)."""
    try:
        yield v3_message(method, url, params) + b"." + nonce.encode()
    except UnicodeDecodeError:
        pass  # the query is not UTF-8: only the SDK's reading is left
    if unquote_to_bytes(urlparse(url).query).isascii() and nonce.isascii():
        return  # both readings are the same text
    sdk_nonce = nonce.encode().decode(_SDK_READING).encode()
    yield v3_message(method, url, params, _SDK_READING) + b"." + sdk_nonce


def _usable(*values: Any) -> bool:
    """Every value a non-empty str. Callers test the optional ones with isinstance first: that
    tells the type checker they are str."""
    return all(isinstance(value, str) and value for value in values)


def _digest(token: str, message: bytes) -> bytes:
    return base64.b64encode(hmac.new(token.encode(), message, hashlib.sha256).digest())


def _any_matches(signatures: str, expected: set[bytes]) -> bool:
    """Constant-time comparison of every candidate against every expected digest."""
    found = False
    for candidate in signatures.encode("utf-8", "surrogatepass").split(b","):
        for digest in expected:
            found |= hmac.compare_digest(candidate.strip(b" \t"), digest)
    return found


def _base_url(parsed: ParseResult) -> str:
    """scheme://host[:port]/path: urlparse's ";params", the query and the fragment dropped, as the SDK does."""
    return urlunparse((parsed.scheme, parsed.netloc, parsed.path, "", "", ""))


def _with_query(base: str, query: str) -> bytes:
    return (base + "?" + query if query else base).encode()


def _parse_query(query: str, encoding: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, encoding=encoding, errors="strict"):
        result.setdefault(key, []).append(value)
    return result


def _query_string(params: Mapping[Any, Any]) -> str:
    return "&".join("&".join(f"{key}={value}" for value in values) for key, values in _groups(params, False))


def _params_string(params: Mapping[Any, Any]) -> str:
    return "".join(f"{key}{value}" for key, values in _groups(params, True) for value in values)


def _groups(params: Mapping[Any, Any], nested: bool) -> Iterator[tuple[Any, list[Any]]]:
    """Each key in signing order with its rendered values (a list's values sorted)."""
    for key in sorted(params):
        value = params[key]
        if isinstance(value, list):
            yield _plain(key), sorted(_plain(value))
        elif nested and isinstance(value, dict):
            yield _plain(key), [_params_string(value)]
        else:
            yield _plain(key), [_plain(value)]


def _plain(value: Any) -> Any:
    """A value as the SDK renders it: numbers and bools like str(), bytes read as Latin-1."""
    if type(value) is str:  # nearly every key and value: no further checks
        return value
    if isinstance(value, bytes):
        return value.decode(_SDK_READING)
    if isinstance(value, (int, float, bool)):
        return str(value)
    if isinstance(value, list):
        return [_list_item(item) for item in value]
    return value


def _list_item(item: Any) -> Any:
    """An object, array or null inside a list is signed as the SDK prints it (str() of it):
    the SDK's own result for one such item; for several (where the SDK fails on sorting
    them) the same texts, sorted. The sandbox signs them the same way."""
    if isinstance(item, dict) or item is None:
        return str(item)
    if isinstance(item, list):
        return str(_plain(item))
    return _plain(item)
