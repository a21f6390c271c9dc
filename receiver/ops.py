"""Operations endpoints: liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from redis.exceptions import RedisError

from receiver.errors import error_response
from receiver.services import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    svc = services()
    try:
        svc.redis.ping()
        mismatch = svc.check_partitions()
    except RedisError:
        return error_response(503, "redis unreachable")
    if mismatch:
        return error_response(503, mismatch)
    return jsonify(status="ready")
