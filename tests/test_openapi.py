"""The OpenAPI document is the contract: schemathesis generates requests from
it and checks every answer against it (status codes, content types, bodies)."""
from __future__ import annotations

import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from config import Settings
from receiver import create_app
from tests.conftest import KEY_A

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
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def conforms(case):
            # A fresh Idempotency-Key: one reused with another body is rightly a 422.
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY_A}",
                                            "Idempotency-Key": uuid.uuid4().hex})
        conforms()
