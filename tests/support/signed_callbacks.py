"""Plivo callbacks to Answerback's webhook, signed with the official plivo SDK's own signer
(so the webhook's check is tested against an independent implementation)."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

from tests.support.api import submit, wait_status
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


class CallbackStream:
    """Signed callbacks for `records`, from several senders at once; what each got and how long
    it was held."""

    def __init__(self, web_url: str, records: list[dict], senders: int, pace_s: float) -> None:
        self.web_url, self.records, self.senders, self.pace_s = web_url, records, senders, pace_s
        self.answers: dict[str, tuple[int, float, str]] = {}  # rid -> (status, seconds, outcome)

    def run(self) -> None:
        with ThreadPoolExecutor(self.senders) as pool:
            shares = [pool.submit(self._send, self.records[i :: self.senders]) for i in range(self.senders)]
        for share in shares:
            share.result()

    def _send(self, records: list[dict]) -> None:
        with httpx.Client(base_url=self.web_url, timeout=90) as client:
            for record in records:
                started = time.monotonic()
                answer = delivery(client, self.web_url, record)
                held = time.monotonic() - started
                outcome = answer.json().get("outcome", "") if answer is not None and answer.status_code == 200 else ""
                self.answers[record["request_id"]] = (answer.status_code if answer else 0, held, outcome)
                time.sleep(self.pace_s)

    def statuses(self) -> list[int]:
        return [self.answers[r["request_id"]][0] for r in self.records]

    def longest_hold(self) -> float:
        return max(held for _, held, _ in self.answers.values())


def pending_records(api, n: int, method: str = "POST", path: str = "Message/") -> list[dict]:
    rids = [submit(api, method, path, {"src": "1", "dst": str(i), "text": "x"})["request_id"] for i in range(n)]
    return [wait_status(api, rid, "pending", timeout=30) for rid in rids]


def not_kept_once(api, records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(lost, applied more than once): requests whose delivered callback is not in them, or twice."""
    stored = [api.get(f"/v1/requests/{r['request_id']}").json() for r in records]
    lost = [
        s
        for r, s in zip(records, stored)
        if s["status"] != "completed" or s["response"] != {"api_id": r["api_id"], "status": "delivered"}
    ]
    return lost, [s for s in stored if s["deliveries"] > 1]
