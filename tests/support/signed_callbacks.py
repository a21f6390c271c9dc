"""Plivo callbacks to Answerback's webhook, signed with the official plivo SDK's own signer
(so the webhook's check is tested against an independent implementation)."""

from __future__ import annotations

import json
import uuid

import httpx
from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

from tests.support.services import AUTH_TOKEN


def sdk_signature(method: str, url: str, params: dict, nonce: str, token: str = AUTH_TOKEN) -> str:
    message = (
        construct_get_url(url, dict(params)) if method == "GET" else construct_post_url(url, dict(params))
    ).decode()
    return get_signature_v3(token.encode(), message, nonce.encode()).decode()


def signed_headers(method: str, url: str, params: dict, nonce: str | None = None, token: str = AUTH_TOKEN) -> dict:
    nonce = nonce or uuid.uuid4().hex
    return {
        "X-Plivo-Signature-V3": sdk_signature(method, url, params, nonce, token),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }


def callback(url: str, rid: str | None, api_id: str) -> tuple[str, bytes, dict[str, str]]:
    """(path and query, body, headers) of one signed JSON callback to the web at `url`."""
    path = "/callbacks/plivo" + (f"?rid={rid}" if rid else "")
    body = {"api_id": api_id, "status": "completed"}
    return (
        path,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", **signed_headers("POST", url + path, body)},
    )


async def post_callback(client: httpx.AsyncClient, url: str, rid: str | None) -> str:
    """A signed callback for a new api_id, answered 200: its outcome."""
    path, body, headers = callback(url, rid, str(uuid.uuid4()))
    answer = await client.post(path, content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["outcome"]


def delivery(client, web_url: str, record: dict) -> httpx.Response | None:
    """The "delivered" callback of `record`; None when the web could not be reached."""
    path = f"/callbacks/plivo?rid={record['request_id']}"
    body = {"api_id": record["api_id"], "status": "delivered"}
    try:
        return client.post(
            path,
            content=json.dumps(body),
            headers={"Content-Type": "application/json", **signed_headers("POST", web_url + path, body)},
        )
    except httpx.TransportError:  # the web process itself never goes down here; not acknowledged
        return None
