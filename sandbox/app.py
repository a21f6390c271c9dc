"""The sandbox's Flask application: the simulated Plivo API plus its /_sandbox/ controls."""

from __future__ import annotations

from typing import cast

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from sandbox import api, api_errors, control
from sandbox.options import Config
from sandbox.simulator import EXTENSION, Simulator

MAX_BODY_BYTES = 1024 * 1024


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    cast(DefaultJSONProvider, app.json).sort_keys = False  # Flask's default provider; typed as its base
    app.extensions[EXTENSION] = Simulator.build(config)
    api_errors.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(control.bp)
    return app
