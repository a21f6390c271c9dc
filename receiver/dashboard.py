"""GET /: a page for people — what the system is doing now, and their own requests.

The page keeps itself current: it asks /dashboard/counts for the cards and /v1/requests for
the caller's list every REFRESH_MS, so a request that completes shows as completed.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template

from receiver.services import services
from receiver.validation import PAGE_SIZE
from store.metrics import snapshot
from store.records import STATUSES

bp = Blueprint("dashboard", __name__)

REFRESH_MS = 2000
# (card id, label, where its figure is: "counter" or "gauge", and under which name)
CARDS = (
    ("submitted", "submitted", "counter", "submitted"),
    ("outbox", "waiting to send", "gauge", "outbox"),
    ("awaiting_callback", "awaiting callback", "gauge", "awaiting_callback"),
    ("completed", "completed", "counter", "finished_completed"),
    ("failed", "failed", "counter", "finished_failed"),
    ("expired", "expired", "counter", "finished_expired"),
    ("duplicate", "duplicate callbacks", "counter", "callbacks_duplicate"),
    ("forged", "forged callbacks refused", "counter", "rejected_signature"),
)


def counts() -> dict[str, int]:
    counters, gauges, _ = snapshot(services().redis)
    source = {"counter": counters, "gauge": gauges}
    cards = {card: source[kind].get(name, 0) for card, _, kind, name in CARDS}
    return {**cards, "quarantined": services().quarantine.size()}  # a banner, not a card


@bp.get("/")
def index() -> str:
    return render_template(
        "dashboard.html",
        cards=CARDS,
        counts=counts(),
        statuses=STATUSES,
        callback_url=services().settings.callback_url,
        refresh_ms=REFRESH_MS,
        page_size=PAGE_SIZE,
    )


@bp.get("/dashboard/counts")
def dashboard_counts() -> Response:
    return jsonify(counts())
