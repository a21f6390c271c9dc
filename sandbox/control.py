"""The sandbox's own switches and observations under /_sandbox/ (no auth: a test tool)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from sandbox.api_errors import BadRequest
from sandbox.simulator import current_simulator
from sandbox.stats import DELIVERY_LOG_SIZE, LOG_SIZE

bp = Blueprint("control", __name__, url_prefix="/_sandbox")
DEFAULT_REQUESTS = 100


@bp.get("/health")
def health() -> Response:
    return jsonify(status="ok")


@bp.get("/faults")
def show_faults() -> Response:
    return jsonify(current_simulator().faults.to_json())


@bp.post("/faults")
def merge_faults() -> Response:
    faults = current_simulator().faults
    faults.merge(_json_object())
    return jsonify(faults.to_json())


@bp.delete("/faults")
def reset_faults() -> Response:
    faults = current_simulator().faults
    faults.reset()
    return jsonify(faults.to_json())


@bp.get("/stats")
def show_stats() -> Response:
    return jsonify(current_simulator().stats.to_json())


@bp.delete("/stats")
def clear_stats() -> Response:
    """Counters and the request log both: a test starts from a clean slate."""
    stats = current_simulator().stats
    stats.clear()
    return jsonify(stats.to_json())


@bp.get("/requests")
def recent_requests() -> Response:
    limit = _limit(request.args.get("limit"))
    return jsonify(requests=current_simulator().stats.requests(limit, request.args.get("rid")))


@bp.get("/callbacks")
def recent_callbacks() -> Response:
    """Every delivery's rid, api_id and answer: how tests prove no acknowledged one was lost."""
    limit = _limit(request.args.get("limit"), DELIVERY_LOG_SIZE)
    return jsonify(callbacks=current_simulator().stats.deliveries(limit))


@bp.delete("/objects")
def forget_objects() -> Response:
    current_simulator().store.clear()
    return Response(status=204)


def _json_object() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object (Content-Type: application/json)")
    return body


def _limit(text: str | None, most: int = LOG_SIZE) -> int:
    if text is None:
        return DEFAULT_REQUESTS
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise BadRequest(f"limit must be an integer from 1 to {most}")
    return int(text)
