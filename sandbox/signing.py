"""Plivo signature V3 on outgoing callbacks, computed with the official SDK's own functions.

Using the SDK here (and not the project's own verifier) makes the sandbox an
independent reference signer: a receiver that verifies these agrees with Plivo's SDK.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from plivo.utils.signature_v3 import construct_get_url, get_signature_v3, get_sorted_params_string


def signature_headers(auth_token: str, method: str, url: str, params: dict[str, Any]) -> dict[str, str]:
    """Headers for one delivery: a fresh nonce, the same signature for the account and the main account."""
    nonce = f"{secrets.randbelow(10**20):020d}"
    signature = sign_v3(auth_token, method, url, nonce, params)
    return {
        "X-Plivo-Signature-V3": signature,
        "X-Plivo-Signature-V3-Nonce": nonce,
        "X-Plivo-Signature-Ma-V3": signature,
    }


def sign_v3(auth_token: str, method: str, url: str, nonce: str, params: dict[str, Any]) -> str:
    """What plivo.utils.validate_v3_signature recomputes for the same URL and params.

    One difference, on purpose: the SDK parses the URL's query as bytes, which
    Python 3 refuses to decode past ASCII (it raises). Here the query is parsed as
    UTF-8 text and handed to the same SDK functions; for an ASCII query the result
    is identical, otherwise it is the "encoded once as UTF-8" form of the URL that Plivo's
    signature V3 documentation describes.
    """
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = parse_qs(parts.query, keep_blank_values=True)
    if method == "GET":
        signed = construct_get_url(base, {**params, **query})
    else:
        signed = construct_get_url(base, query, not params) + get_sorted_params_string(params).encode("utf-8")
    return get_signature_v3(auth_token.encode("utf-8"), signed.decode("utf-8"), nonce.encode("utf-8")).decode("ascii")
