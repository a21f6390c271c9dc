"""The client API: submission, reading, listing, tenancy and bad input."""

from __future__ import annotations

import pytest

from tests.support.api import submit, wait_status, written_keys


def test_submission_answers_202_with_the_record_and_location(api):
    answer = api.post(
        "/v1/requests", json={"method": "POST", "path": "Message/", "params": {"src": "1", "dst": "2", "text": "hi"}}
    )
    assert answer.status_code == 202
    record = answer.json()
    assert answer.headers["Location"] == f"/v1/requests/{record['request_id']}"
    assert record["status"] == "queued" and record["path"] == "Message/"
    assert record["api_id"] is None and record["response"] is None and record["error"] is None
    assert record["submitted_at"].endswith("Z")
    assert api.get(answer.headers["Location"]).json()["request_id"] == record["request_id"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}])
def test_missing_or_wrong_key_is_401_with_www_authenticate(web, headers):
    with web.client(key=None) as anonymous:
        answer = anonymous.get("/v1/requests", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in answer.json()


def test_another_key_gets_404_for_my_request(api, api_b):
    record = submit(api)
    assert api_b.get(f"/v1/requests/{record['request_id']}").status_code == 404
    assert api_b.get(f"/v1/requests/{record['request_id']}", params={"wait": 1}).status_code == 404
    assert api_b.get("/v1/requests").json()["meta"]["total_count"] == 0


def test_unknown_ids_are_404(api):
    assert api.get("/v1/requests/nope").status_code == 404
    assert api.get("/v1/results/63f0761a-e0ed-11e1-8ea7-12313924e3a6").status_code == 404


def test_list_pages_newest_first_per_key(api, api_b):
    mine = [submit(api)["request_id"] for _ in range(45)]
    theirs = [submit(api_b)["request_id"] for _ in range(3)]
    seen, url = [], "/v1/requests?limit=20&offset=0"
    pages = []
    while url:
        page = api.get(url).json()
        pages.append(page["meta"])
        seen += [r["request_id"] for r in page["objects"]]
        url = page["meta"]["next"]
    assert seen == list(reversed(mine))
    assert [m["offset"] for m in pages] == [0, 20, 40]
    assert pages[0]["previous"] is None and pages[1]["previous"] == "/v1/requests?limit=20&offset=0"
    assert pages[2]["next"] is None and pages[0]["total_count"] == 45
    assert [r["request_id"] for r in api_b.get("/v1/requests").json()["objects"]] == list(reversed(theirs))
    odd = api.get("/v1/requests", params={"limit": 7, "offset": 40}).json()
    assert len(odd["objects"]) == 5 and odd["meta"]["next"] is None


def test_list_filters_by_status(api):
    rid = submit(api)["request_id"]
    statuses = {r["status"] for r in api.get("/v1/requests", params={"status": "queued"}).json()["objects"]}
    assert statuses <= {"queued"}
    assert api.get("/v1/requests", params={"status": "bogus"}).status_code == 400
    assert rid


@pytest.mark.parametrize("query", ["limit=0", "limit=21", "limit=abc", "offset=-1", "offset=1.5", "limit="])
def test_bad_pagination_is_400_with_a_message(api, query):
    answer = api.get("/v1/requests?" + query)
    assert answer.status_code == 400
    assert "must be an integer" in answer.json()["error"]


@pytest.mark.parametrize("wait", ["-1", "61", "x"])
def test_bad_wait_is_400(api, worker, wait):
    rid = submit(api)["request_id"]
    assert api.get(f"/v1/requests/{rid}", params={"wait": wait}).status_code == 400
    wait_status(api, rid, "completed")  # its send and callback are over before the next test cleans up


@pytest.mark.parametrize(
    "body, field",
    [
        ({"method": "PUT", "path": "Call/"}, "method"),
        ({"method": "POST", "path": "/Call/"}, "path"),
        ({"method": "POST", "path": "Call/../../x/"}, "path"),
        ({"method": "POST", "path": "https://evil.example/Call/"}, "path"),
        ({"method": "POST", "path": "//evil.example/Call/"}, "path"),
        ({"method": "POST", "path": "Call/", "params": [1]}, "params"),
        ({"method": "POST", "path": "Call/", "params": {"callback_url": "x"}}, "params"),
        ({"method": "GET", "path": "Call/", "params": {"nested": {"a": 1}}}, "body"),
        ({"method": "POST", "path": "Call/", "callback_method": "PUT"}, "callback_method"),
        ({"path": "Call/"}, "method"),
    ],
)
def test_bad_submissions_are_400_and_write_nothing(api, redis, body, field):
    answer = api.post("/v1/requests", json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["fields"]
    assert not written_keys(redis)


def test_non_json_submission_is_415_and_malformed_json_400(api, redis):
    assert api.post("/v1/requests", content=b"method=POST", headers={"Content-Type": "text/plain"}).status_code == 415
    answer = api.post("/v1/requests", content=b"{nope", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "JSON" in answer.json()["error"]
    assert not written_keys(redis)


def test_idempotency_key_returns_the_first_request(api, redis):
    body = {"method": "POST", "path": "Call/", "params": {"to": "1"}}
    first = api.post("/v1/requests", json=body, headers={"Idempotency-Key": "abc"})
    again = api.post("/v1/requests", json=body, headers={"Idempotency-Key": "abc"})
    assert first.status_code == again.status_code == 202
    assert again.json()["request_id"] == first.json()["request_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = api.post("/v1/requests", json=body | {"params": {"to": "2"}}, headers={"Idempotency-Key": "abc"})
    assert other.status_code == 422
    assert api.get("/v1/requests").json()["meta"]["total_count"] == 1


def test_named_keys_of_one_tenant_share_its_requests_for_rotation(make_stack):
    stack = make_stack(db=6, workers=0, API_KEYS="acme:old-key,acme:new-key,other-key")
    with stack.web.client("old-key") as old, stack.web.client("new-key") as new, stack.web.client("other-key") as other:
        rid = submit(old)["request_id"]
        assert new.get(f"/v1/requests/{rid}").status_code == 200
        assert new.get("/v1/requests").json()["meta"]["total_count"] == 1
        assert other.get(f"/v1/requests/{rid}").status_code == 404
    with stack.web.client("acme") as name_only:
        assert name_only.get("/v1/requests").status_code == 401
