"""LOG_FORMAT=json: every line web and a worker write is one JSON object, and the lines about
a request carry its request_id and api_id (logs.py, receiver/gunicorn_logger.py)."""

from __future__ import annotations

import json
from typing import Any

from tests.support.api import submit

DB = 15
FIELDS = {"time", "level", "logger", "message"}


def entries(log: bytes) -> list[dict[str, Any]]:
    """Each line of the log, parsed: a line that is not one JSON object fails the test."""
    lines = log.decode().splitlines()
    assert lines
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(entry, dict) and entry.keys() >= FIELDS for entry in parsed), lines[:5]
    return parsed


def about(entries: list[dict[str, Any]], logger: str, text: str) -> list[dict[str, Any]]:
    found = [e for e in entries if e["logger"] == logger and text in e["message"]]
    assert found, f"no {logger} line with {text!r}"
    return found


def test_json_logs_are_one_object_a_line_tagged_with_the_request(make_stack):
    stack = make_stack(db=DB, LOG_FORMAT="json", LOG_LEVEL="debug", ACCESS_LOG="-")
    with stack.web.client() as api:
        rid = submit(api)["request_id"]
        done = api.get(f"/v1/requests/{rid}", params={"wait": 20}).json()
        assert done["status"] == "completed", done
        api_id = done["api_id"]
        assert api.get(f"/v1/results/{api_id}").status_code == 200
        assert api.get("/v1/requests", params={"limit": "0"}).status_code == 400
    stack.workers[0].stop()
    stack.web.service.stop()
    web, worker = entries(stack.web.service.log_path.read_bytes()), entries(stack.workers[0].log_path.read_bytes())

    ids = {"request_id": rid, "api_id": api_id}
    submitted = about(web, "gunicorn.access", 'POST /v1/requests HTTP/1.1" 202')
    assert [e.get("request_id") for e in submitted] == [rid]
    for line in about(web, "gunicorn.access", "POST /callbacks/plivo") + about(
        web, "gunicorn.access", f"/v1/results/{api_id}"
    ):
        assert {k: line.get(k) for k in ids} == ids, line
    # A request about no request carries no ids: the last request's do not linger in the thread.
    listed = about(web, "gunicorn.access", 'GET /v1/requests?limit=0 HTTP/1.1" 400')
    assert all("request_id" not in e and "api_id" not in e for e in listed), listed
    assert about(web, "gunicorn.error", "Booting worker")  # gunicorn's own lines too

    sent = about(worker, "workers.sending", f"request {rid} attempt 1: accepted")
    assert all({k: e.get(k) for k in ids} == ids for e in sent), sent
    assert about(worker, "rq.worker", "drain the outbox")  # RQ's loggers reach the JSON handler
