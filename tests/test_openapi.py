"""The OpenAPI document is the contract: schemathesis generates requests from
it and checks every answer against it (status codes, content types, bodies)."""
from __future__ import annotations

import re
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from config import Settings
from receiver import create_app
from tests.support.services import KEY_A

DB = 11
EXAMPLES = 100  # per operation


@pytest.fixture(scope="module")
def openapi_app(redis_server):
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    app = create_app(Settings.from_env({"REDIS_URL": url, "API_KEYS": KEY_A, "PLIVO_AUTH_TOKEN": "t"}))
    redis = app.extensions["answerback"].redis
    redis.flushdb()
    yield app
    redis.flushdb()


def test_every_answer_conforms_to_the_openapi_document(openapi_app):
    """Each operation gets generated cases (schemathesis's pytest plugin does not load
    under pytest 9, so its strategies are driven by hypothesis here)."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", openapi_app)
    redis = openapi_app.extensions["answerback"].redis
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def conforms(case):
            redis.flushdb()   # every example from an empty database, so that a failure replays
            # A fresh Idempotency-Key: one reused with another body is rightly a 422.
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY_A}",
                                            "Idempotency-Key": uuid.uuid4().hex})
        conforms()


def test_the_document_states_this_deployments_longest_callback_timeout(redis_server):
    """From MAX_CALLBACK_TIMEOUT, not a fixed number; a submission past it is refused."""
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    app = create_app(Settings.from_env({"REDIS_URL": url, "API_KEYS": KEY_A, "MAX_CALLBACK_TIMEOUT": "1234"}))
    client = app.test_client()
    submission = client.get("/openapi.json").json["components"]["schemas"]["Submission"]
    assert [b.get("maximum") for b in submission["properties"]["callback_timeout"]["anyOf"]] == [1234, None]
    answer = client.post("/v1/requests", headers={"Authorization": f"Bearer {KEY_A}"},
                         json={"method": "GET", "path": "Call/", "callback_timeout": 1235})
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
