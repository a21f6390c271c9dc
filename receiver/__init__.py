"""The web process: callbacks, the client API, operations endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

import logs
from config import Settings

if TYPE_CHECKING:  # Flask is imported by create_app: gunicorn's master imports this package for its logger only
    from flask import Flask


def create_app(settings: Settings | None = None) -> Flask:
    from flask import Flask

    from receiver import (
        auth,
        callbacks,
        dashboard,
        errors,
        events,
        health,
        openapi,
        ops,
        prometheus,
        quarantine,
        requests_api,
        series,
    )
    from receiver.front import Front
    from receiver.json_provider import FastJSONProvider
    from receiver.services import Services, log_start

    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.json = FastJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["answerback"] = built = Services.build(settings)
    built.start_spool_replayer()
    quarantine.recheck_at_start(built)
    log_start(settings)
    auth.log_api_keys(settings.api_keys)
    app.before_request(logs.clear)  # a connection's greenlet serves many requests in turn
    errors.init_app(app)
    for module in (callbacks, requests_api, events, series, health, quarantine, ops, prometheus, openapi, dashboard):
        app.register_blueprint(module.bp)
    app.register_blueprint(openapi.docs_bp)
    # Callbacks and submissions, served before Flask's dispatch. Replacing wsgi_app is Flask's
    # documented way to add WSGI middleware; mypy sees only that it is a method.
    app.wsgi_app = Front(app, app.wsgi_app)  # type: ignore[method-assign]
    return app
