"""The baseline of the waiting bench: a Flask app whose webhook does nothing, served by
gunicorn with the same gunicorn.conf.py as web."""

from flask import Flask, Response, jsonify


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/callbacks/plivo")
    def plivo() -> Response:
        return jsonify(outcome="noop")

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    return app
