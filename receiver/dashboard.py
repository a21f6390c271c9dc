"""GET /: a page for people — what the system is doing now, and their own requests."""
from __future__ import annotations

from flask import Blueprint, render_template

from receiver.services import services
from store.metrics import snapshot
from store.records import STATUSES

bp = Blueprint("dashboard", __name__)


@bp.get("/")
def index():
    counters, gauges = snapshot(services().redis)
    return render_template("dashboard.html", counters=counters, gauges=gauges,
                           callback_url=services().settings.callback_url, statuses=STATUSES)
