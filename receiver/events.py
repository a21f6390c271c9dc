"""A request's timeline, `GET /v1/requests/{id}/events`: the console's view of one request."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from receiver.auth import require_key
from receiver.requests_api import PREFIX, _own_record
from receiver.services import services
from store.events import Events

bp = Blueprint("events", __name__, url_prefix=PREFIX)


@bp.get("/requests/<request_id>/events")
@require_key
def get_events(request_id: str) -> Response:
    """Another tenant's request answers 404, as an unknown one does."""
    record = _own_record(request_id)
    svc = services()
    signature = "valid" if svc.settings.verify_signatures else "unchecked"
    timeline = Events(svc.requests.redis, svc.requests).timeline(record.fields, signature)
    return jsonify(request_id=request_id, events=timeline.events, dropped=timeline.dropped)
