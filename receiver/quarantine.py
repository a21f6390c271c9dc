"""The quarantine's endpoints (admin keys only) and its re-check: refused callbacks
(store/quarantine.py) verified again with the current settings, when web starts and on
demand. One that now verifies is applied exactly as the webhook applies a callback that
just arrived (receiver/callbacks.py: `check`, then `keep`), and taken out; the others stay
until QUARANTINE_TTL.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from io import BytesIO
from typing import Any

from flask import Blueprint, Response, jsonify, request
from redis.exceptions import RedisError
from werkzeug.wrappers import Request

from receiver import callbacks
from receiver.auth import require_admin
from receiver.services import Services, services
from receiver.validation import PAGE_SIZE, int_arg, known_args, page_meta
from store.quarantine import Quarantined
from store.records import iso

log = logging.getLogger(__name__)

bp = Blueprint("quarantine", __name__, url_prefix="/v1")

PAGE_ARGS = ("limit", "offset")
BATCH = 50  # entries read from Redis at a time while re-checking
LOCK_S = 60.0  # the start-up re-check's lock: one web process at a time does it
SHOWN = ("id", "reason", "rid", "known_request", "method", "checked_url", "size")


@bp.get("/quarantine")
@require_admin
def list_quarantine() -> Response:
    known_args(request.args, PAGE_ARGS)
    limit = int_arg(request.args, "limit", PAGE_SIZE, 1, PAGE_SIZE)
    offset = int_arg(request.args, "offset", 0, 0)
    total, entries = services().quarantine.page(offset, limit)
    return jsonify(
        meta=page_meta("quarantine.list_quarantine", limit, offset, total),
        objects=[_shown(entry) for entry in entries],
    )


@bp.post("/quarantine/recheck")
@require_admin
def recheck_now() -> Response:
    return jsonify(recheck(services()))


def _shown(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as the API shows it: no signature header (nor its nonce), no body."""
    query = entry.get("query", "")
    return {
        **{name: entry.get(name) for name in SHOWN},
        "url": entry.get("path", "") + ("?" + query if query else ""),
        "received_at": iso(entry.get("at")),
        "headers": {k: v for k, v in entry.get("headers", {}).items() if not k.lower().startswith("x-plivo-signature")},
    }


def recheck(svc: Services) -> dict[str, Any]:
    """Verify every quarantined callback again; apply and take out those that pass."""
    checked, outcomes = 0, Counter[str]()
    ids = svc.quarantine.ids()
    for start in range(0, len(ids), BATCH):
        for entry in svc.quarantine.entries(ids[start : start + BATCH]):
            checked += 1
            try:
                delivery = callbacks.check(svc, _request(entry))
            except callbacks.Refused:
                continue
            outcome = callbacks.keep(svc, delivery).outcome
            if svc.quarantine.remove(entry.id, outcome):
                outcomes[outcome] += 1
    return {
        "checked": checked,
        "applied": sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "quarantined": svc.quarantine.size(),
    }


def _request(entry: Quarantined) -> Request:
    """The refused request again, as werkzeug read it when it arrived."""
    described = entry.description
    environ: dict[str, Any] = {
        "REQUEST_METHOD": described["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": described["path"],
        "QUERY_STRING": described["query"],
        "SERVER_NAME": "quarantine",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": BytesIO(entry.body),
        "CONTENT_LENGTH": str(len(entry.body)),
    }
    for name, value in described["headers"].items():
        key = name.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else "HTTP_" + key] = value
    return Request(environ)


def recheck_at_start(svc: Services) -> None:
    """Re-check the quarantine once web is up (in the background: a start never waits on
    it), in one web process at a time."""
    threading.Thread(target=_recheck_once, args=(svc,), name="quarantine-recheck", daemon=True).start()


def _recheck_once(svc: Services) -> None:
    try:
        with svc.quarantine.recheck_lock(LOCK_S) as held:
            if not held:
                return
            result = recheck(svc)
    except RedisError as exc:
        log.warning("quarantine not re-checked at start: Redis unavailable (%s)", type(exc).__name__)
        return
    except Exception:
        log.exception("quarantine re-check at start failed")
        return
    if result["applied"]:
        log.info(
            "quarantine: %d refused callbacks now verify and were applied (%s)", result["applied"], result["outcomes"]
        )
    if result["quarantined"]:
        log.warning(
            "quarantine: %d refused callbacks still do not verify with these settings; see GET /v1/quarantine",
            result["quarantined"],
        )
