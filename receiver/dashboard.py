"""GET /: the operator's console. Without a key it is a sign-in form and nothing else: the
page (receiver/static/console.js) fetches nothing until a key is entered, then reads every
figure through the API with that key (/v1/summary, /v1/requests, /v1/requests/{id}/events,
/v1/series, /v1/status), so that it shows exactly what the key may read and no figure of the
deployment is public."""

from __future__ import annotations

from flask import Blueprint, Response, make_response, render_template

from receiver.validation import PAGE_SIZE
from store.records import STATUSES

bp = Blueprint("dashboard", __name__)

REFRESH_MS = 2000
# The page runs web's own script and style and talks to web alone: the browser refuses anything
# else, an injected inline script included, and the page is not framed by another site.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@bp.get("/")
def index() -> Response:
    page = make_response(
        render_template("dashboard.html", statuses=STATUSES, refresh_ms=REFRESH_MS, page_size=PAGE_SIZE)
    )
    page.headers["Content-Security-Policy"] = POLICY
    page.headers["Referrer-Policy"] = "no-referrer"
    return page
