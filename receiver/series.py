"""GET /v1/series and GET /v1/summary: the figures the console's charts and cards draw.

A key reads its own tenant's figures; `scope=all` (every tenant's together) takes an
ADMIN_API_KEYS key. The figures are kept by store/series.py.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from receiver.auth import check_admin, require_key
from receiver.errors import BadRequest
from receiver.services import services
from receiver.validation import known_args
from store import series
from store.connection import now_ms
from store.metrics import snapshot
from store.records import STATUSES, iso

bp = Blueprint("series", __name__, url_prefix="/v1")

SCOPES = ("tenant", "all")
ADMIN_ONLY = "scope=all takes an admin key (ADMIN_API_KEYS)"
# scope=all's summary: figure -> (where it is, "counter" or "gauge", its name in store.metrics.snapshot)
GLOBAL_FIGURES = {
    "submitted": ("counter", "submitted"),
    "outbox": ("gauge", "outbox"),
    "awaiting_callback": ("gauge", "awaiting_callback"),
    "completed": ("counter", "finished_completed"),
    "failed": ("counter", "finished_failed"),
    "expired": ("counter", "finished_expired"),
    "duplicate": ("counter", "callbacks_duplicate"),
    "forged": ("counter", "rejected_signature"),
}


def _choice(name: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.args.get(name, default)
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}")
    return value


def _scope(allowed_args: tuple[str, ...]) -> tuple[str, ...] | None:
    """The tenant whose figures to read, with its aliases (None: every tenant's, for an admin key
    only). An alias's figures are the tenant's, as its requests are: the same key made them."""
    if request.args.get("scope") == "all":
        check_admin(ADMIN_ONLY)
        owners = None
    else:
        owners = _owners()  # a missing or unknown key is a 401 before any parameter is a 400
    known_args(request.args, allowed_args)
    _choice("scope", SCOPES, "tenant")
    return owners


@require_key
def _owners() -> tuple[str, ...]:
    return (str(g.tenant), *g.tenant_aliases)


@bp.get("/series")
def get_series() -> Response:
    owners = _scope(("window", "scope"))
    window = _choice("window", tuple(series.WINDOWS), "hour")
    svc = services()
    span, figures = series.read(svc.redis, owners, window, now_ms(), svc.partitions)
    return jsonify(
        window=window,
        scope="tenant" if owners else "all",
        step_s=span.step_min * 60,
        start=iso(span.start_min * 60000),
        end=iso(span.end_min * 60000),
        series=figures,
    )


@bp.get("/summary")
def get_summary() -> Response:
    owners = _scope(("scope",))
    svc = services()
    if owners:
        return jsonify(scope="tenant", counts=series.tenant_counts(svc.redis, owners, STATUSES, svc.partitions))
    counters, gauges, _ = snapshot(svc.redis, svc.partitions)
    source: dict[str, dict[str, Any]] = {"counter": counters, "gauge": gauges}
    counts = {figure: source[kind].get(name, 0) for figure, (kind, name) in GLOBAL_FIGURES.items()}
    return jsonify(scope="all", counts={**counts, "quarantined": svc.quarantine.size()})
