"""One received API request, as the request log and the counters remember it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import Request

from sandbox.auth import has_valid_credentials
from sandbox.options import Config

RID_PARAM = "rid"


@dataclass
class Visit:
    time: float
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    json: Any
    auth_ok: bool
    rid: str | None
    faults: list[str] = field(default_factory=list)

    @classmethod
    def from_request(cls, request: Request, config: Config) -> Visit:
        body = request.get_json(silent=True) if request.mimetype == "application/json" else None
        query = request.args.to_dict()
        args = body if request.method == "POST" and isinstance(body, dict) else query
        return cls(
            time=time.time(),
            method=request.method,
            path=request.path,
            query=query,
            content_type=request.content_type,
            json=body,
            auth_ok=has_valid_credentials(request.authorization, config),
            rid=rid_of(args.get("callback_url")),
        )

    def to_json(self, status: int | None, api_id: str | None, acted: bool) -> dict[str, Any]:
        return {**self.__dict__, "faults": list(self.faults), "status": status, "api_id": api_id, "acted": acted}


def rid_of(callback_url: Any) -> str | None:
    """The request id Answerback puts into its callback URLs, so tests can count sends per request."""
    if not isinstance(callback_url, str):
        return None
    try:
        values = parse_qs(urlsplit(callback_url).query).get(RID_PARAM)
    except ValueError:
        return None
    return values[0] if values else None
