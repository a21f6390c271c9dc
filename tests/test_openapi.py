"""The OpenAPI document is the contract: schemathesis generates requests from
it and checks every answer against it (status codes, content types, bodies)."""

from __future__ import annotations

import base64
import re
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS
from schemathesis.core.parameters import ParameterLocation

from config import Settings
from receiver import create_app
from tests.support.services import KEY_A

DB = 11
EXAMPLES = 100  # per operation
SECRET = "whsec_" + base64.b64encode(b"openapi-test-secret").decode()


@pytest.fixture(scope="module")
def openapi_app(redis_server):
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    app = create_app(Settings.from_env({"REDIS_URL": url, "API_KEYS": KEY_A, "PLIVO_AUTH_TOKEN": "t"}))
    redis = app.extensions["answerback"].redis
    redis.flushdb()
    yield app
    redis.flushdb()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_answer_conforms_to_the_openapi_document(openapi_app, mode):
    """Each operation gets generated cases, valid ones (positive) and ones the document forbids
    (negative, which must be refused), checked by every check schemathesis has, as
    `--checks all` does (its pytest plugin does not load under pytest 9, so its strategies
    are driven by hypothesis here)."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", openapi_app)
    redis = openapi_app.extensions["answerback"].redis
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    tried = 0
    for operation in operations:
        try:
            strategy = operation.as_strategy(generation_mode=GenerationMode(mode))
        except Exception:
            continue

        @given(case=strategy)
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def conforms(case):
            redis.flushdb()  # every example from an empty database, so that a failure replays
            # A fresh Idempotency-Key: one reused with another body is rightly a 422.
            if mode == "positive":
                headers = {"Authorization": f"Bearer {KEY_A}", "Idempotency-Key": uuid.uuid4().hex}
            elif getattr(case.meta.components.get(ParameterLocation.HEADER), "mode", None) != GenerationMode.NEGATIVE:
                headers = {"Authorization": f"Bearer {KEY_A}"}
            else:  # the headers are what is wrong (a key missing or malformed): sent as generated
                headers = {}
            case.call_and_validate(headers=headers, checks=CHECKS.get_all())

        try:
            conforms()
        except Unsatisfiable:  # nothing of this operation can break the document (no parameters)
            assert mode == "negative"
            continue
        tried += 1
    assert tried >= (10 if mode == "positive" else 5)


def test_the_document_is_valid_for_a_standard_openapi_validator(redis_server):
    """Validators and gateways refuse a document whose defaults break their own schemas (an
    optional string rendered with default null), with notifications on and off."""
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    for extra in ({}, {"NOTIFY_HOSTS": "example.com", "WEBHOOK_SECRET": SECRET}):
        app = create_app(Settings.from_env({"REDIS_URL": url, "API_KEYS": KEY_A, **extra}))
        validate(app.test_client().get("/openapi.json").json)


def test_an_unknown_query_parameter_is_refused_by_name(openapi_app):
    """A misspelt filter must not be ignored silently (it would list every request)."""
    client = openapi_app.test_client()
    auth = {"Authorization": f"Bearer {KEY_A}"}
    answer = client.get("/v1/requests?stauts=failed", headers=auth)
    assert answer.status_code == 400 and "'stauts'" in answer.json["error"]
    assert client.get("/v1/requests?status=failed&limit=5&offset=0", headers=auth).status_code == 200
    answer = client.get("/v1/results/" + str(uuid.uuid4()) + "?wiat=5", headers=auth)
    assert answer.status_code == 400 and "'wiat'" in answer.json["error"]


def test_the_document_states_this_deployments_longest_callback_timeout(redis_server):
    """From MAX_CALLBACK_TIMEOUT, not a fixed number; a submission past it is refused."""
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    app = create_app(Settings.from_env({"REDIS_URL": url, "API_KEYS": KEY_A, "MAX_CALLBACK_TIMEOUT": "1234"}))
    client = app.test_client()
    submission = client.get("/openapi.json").json["components"]["schemas"]["Submission"]
    assert [b.get("maximum") for b in submission["properties"]["callback_timeout"]["anyOf"]] == [1234, None]
    answer = client.post(
        "/v1/requests",
        headers={"Authorization": f"Bearer {KEY_A}"},
        json={"method": "GET", "path": "Call/", "callback_timeout": 1235},
    )
    assert answer.status_code == 400 and "1234" in answer.json["error"]


def test_the_docs_page_is_served_from_here_with_no_outside_asset(web):
    """Swagger UI from the flask-swagger-ui wheel: every script and style it names is ours."""
    with web.client(key=None) as anon:
        page = anon.get("/docs/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
        for asset in assets:
            assert asset.startswith("/docs/"), asset
            assert anon.get(asset).status_code == 200, asset
        assert '"url": "/openapi.json"' in page.text and '"validatorUrl": null' in page.text
