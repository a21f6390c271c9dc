"""Secrets never appear in logs, records, error answers or exception traces.

A web and a worker (debug logging, access log on, in text and in JSON) go through a full working
day against the sandbox: successes (one notified, signed, to a receiving
application that first answers 500), an upstream 4xx, retried 5xx, waiting
reads, wrong keys (one of them the Plivo token itself), another tenant's key,
forged callbacks, malformed, unsupported and oversized bodies, inputs that
ended in exception traces on web and on the worker. Then every log line
they wrote, every value in their Redis database (rq's compressed job data
unpacked) and every error answer is searched for the Plivo auth token, both
API keys, the Basic credentials Plivo is sent, "Authorization: Bearer", the
webhook secret and the notification signatures.
"""

from __future__ import annotations

import base64
import json
import uuid
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis as redis_lib

from local.processes import wait_for
from receiver.signature import sign_v3
from tests.support.api import submit, wait_status
from tests.support.notify_receiver import NEW_SECRET, Receiver
from tests.support.services import AUTH_ID, AUTH_TOKEN, KEY_A, KEY_B

pytestmark = pytest.mark.slow

DB, DB_BASIC, DB_JSON = 12, 13, 14
BASIC = base64.b64encode(f"{AUTH_ID}:{AUTH_TOKEN}".encode()).decode()
NOTIFY_TOKEN, NOTIFY_QUERY_TOKEN = "hook-path-token-5e1f", "hook-query-token-9c2a"  # in a notify_url
REDIS_PASSWORD = "redis-password-7b3d"  # of a Redis user the stack connects as
SECRETS = {
    "the Plivo auth token": AUTH_TOKEN,
    "the Redis password": REDIS_PASSWORD,
    "API key A": KEY_A,
    "API key B": KEY_B,
    "the Basic credentials sent to Plivo": BASIC,
    "an Authorization header": "Authorization: Bearer",
    "the webhook secret": NEW_SECRET,
    "the webhook secret's key": NEW_SECRET.removeprefix("whsec_"),
}
# Kept in the record (its owner reads its notify_url back), never logged.
URL_TOKENS = {"a notify_url's path token": NOTIFY_TOKEN, "a notify_url's query token": NOTIFY_QUERY_TOKEN}


def needles(secrets: dict[str, str]) -> list[tuple[str, bytes]]:
    """Each secret as bytes, also percent-encoded and (for the header) in any letter case."""
    found = []
    for name, text in secrets.items():
        for form in {text, quote(text, safe="")}:
            found.append((name, form.encode()))
    return found


def leaks(where: str, data: bytes, secrets: dict[str, str] = SECRETS) -> list[str]:
    lowered = data.lower()
    return [
        f"{name} in {where}"
        for name, needle in needles(secrets)
        if needle in data or (name == "an Authorization header" and needle.lower() in lowered)
    ]


def redis_dump(url: str) -> Iterator[tuple[str, bytes]]:
    """Every key of the stack's database and every value in it, as bytes; a value that is
    zlib-compressed (rq's job data) is also given unpacked."""
    client = redis_lib.Redis.from_url(url)
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            values: list[bytes] = [key]
            if kind == b"string":
                values.append(client.get(key) or b"")
            elif kind == b"hash":
                for field, value in client.hgetall(key).items():
                    values += [field, value]
            elif kind == b"list":
                values += client.lrange(key, 0, -1)
            elif kind == b"set":
                values += list(client.smembers(key))
            elif kind == b"zset":
                values += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == b"stream":
                for _, entry in client.xrange(key):
                    for field, value in entry.items():
                        values += [field, value]
            for value in values:
                yield key.decode(errors="replace"), value
                try:
                    yield key.decode(errors="replace") + " (unzipped)", zlib.decompress(value)
                except zlib.error:
                    pass
    finally:
        client.close()


class Recorder:
    """Every answer received; error answers are searched for secrets."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, httpx.Response]] = []

    def __call__(self, what: str, answer: httpx.Response, *expected: int) -> httpx.Response:
        self.answers.append((what, answer))
        if expected:
            assert answer.status_code in expected, (what, answer.status_code, answer.text[:300])
        return answer

    def errors(self) -> list[tuple[str, httpx.Response]]:
        return [(what, a) for what, a in self.answers if a.status_code >= 400]


def forged(url: str, body: dict[str, Any]) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Plivo-Signature-V3-Nonce": "forged-1",
        "X-Plivo-Signature-V3": sign_v3("not-the-token", "POST", url, "forged-1", body),
    }


def log_lines(log: bytes, log_format: str) -> list[str]:
    """The log's lines as "[LEVEL] message"; in JSON every line must be one object."""
    if log_format == "text":
        return log.decode(errors="replace").splitlines()
    return [f"[{entry['level']}] {entry['message']}" for entry in map(json.loads, log.splitlines())]


@pytest.mark.parametrize("log_format, db", [("text", DB), ("json", DB_JSON)])
def test_secrets_never_appear_in_logs_records_or_error_answers(make_stack, base_env, sandbox, log_format, db):
    admin = redis_lib.Redis.from_url(base_env["REDIS_URL"])
    admin.acl_setuser(
        "answerback", enabled=True, passwords=[f"+{REDIS_PASSWORD}"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    admin.close()
    password_url = base_env["REDIS_URL"].replace("redis://", f"redis://answerback:{REDIS_PASSWORD}@").rsplit("/", 1)[0]
    stack = make_stack(
        db=db,
        LOG_LEVEL="debug",
        ACCESS_LOG="-",
        LOG_FORMAT=log_format,
        NOTIFY_HOSTS="127.0.0.1",
        WEBHOOK_SECRET=NEW_SECRET,
        NOTIFY_SCHEDULE="0.2",
        REDIS_URL=f"{password_url}/{db}",
    )
    web = stack.web
    record = Recorder()
    callback_url = web.url + "/callbacks/plivo"
    receiver = Receiver().start()
    receiver.answers = [500]
    with web.client(KEY_A) as api, web.client(KEY_B) as api_b, web.client(key=None) as anon:
        # Successes, one of them read with ?wait, one by api_id with ?wait, one notified.
        first = submit(
            api,
            "POST",
            "Call/",
            {"from": "14155550100", "to": "14155550101"},
            notify_url=f"http://127.0.0.1:{receiver.port}/hooks/{NOTIFY_TOKEN}?token={NOTIFY_QUERY_TOKEN}",
        )
        done = record("wait", api.get(f"/v1/requests/{first['request_id']}", params={"wait": 20}), 200).json()
        assert done["status"] == "completed", done
        wait_for(lambda: len(receiver.received) == 2, 20, message="the notification, sent twice")
        receiver.stop()
        assert [r["verified"] for r in receiver.received] == [[True], [True]]
        signatures = {
            f"notification signature {i}": r["headers"]["webhook-signature"].removeprefix("v1,")
            for i, r in enumerate(receiver.received)
        }
        second = submit(api, "GET", "Call/", {})
        pending = wait_status(api, second["request_id"], {"pending", "completed"})
        if pending["api_id"]:
            record("wait by api_id", api.get(f"/v1/results/{pending['api_id']}", params={"wait": 20}), 200)
        third = submit(api_b, "POST", "Message/", {"src": "1", "dst": "2", "text": "hi"}, callback_method="GET")
        wait_status(api_b, third["request_id"], "completed")
        # Refused by the upstream (4xx: failed at once), then refused twice with 5xx (retried).
        sandbox.faults(status_4xx={"rate": 1.0, "times": 1, "error": "to is invalid"})
        failed = wait_status(api, submit(api)["request_id"], "failed")
        assert failed["error"]["status"] == 400
        sandbox.faults(status_5xx={"rate": 1.0, "times": 2, "status": [500, 503]})
        retried = wait_status(api, submit(api)["request_id"], "completed")
        assert retried["attempts"] == 3
        sandbox.reset()
        record("deliveries", api.get(f"/v1/requests/{first['request_id']}/deliveries"), 200)
        record("list", api.get("/v1/requests", params={"limit": 5}), 200)
        # The console's reads and retries: what they answer and what they keep in Redis.
        retry = record("retry", api.post(f"/v1/requests/{failed['request_id']}/retry"), 202).json()
        record("retry again", api.post(f"/v1/requests/{failed['request_id']}/retry"), 409)
        record("bulk preview", api.post("/v1/requests/retry", json={"preview": True}), 200)
        bulk = record("bulk", api.post("/v1/requests/retry", json={"status": "expired"}), 202).json()
        record("bad bulk", api.post("/v1/requests/retry", json={"preview": "no"}), 400)
        console = [
            record(f"events {r}", api.get(f"/v1/requests/{r}/events"), 200)
            for r in (first["request_id"], failed["request_id"], retry["request_id"])
        ]
        console += [record("bulk progress", api.get(f"/v1/requests/retry/{bulk['bulk_id']}"), 200)]
        console += [record(path, api.get(path), 200) for path in ("/v1/series", "/v1/summary")]
        assert any(e["event"] == "notification" for e in console[0].json()["events"])

        # Wrong keys (one of them the Plivo token), Plivo's own Basic credentials, no key.
        for auth in (
            "Bearer wrong-key",
            f"Bearer {AUTH_TOKEN}",
            f"Bearer {KEY_A}x",
            f"Basic {BASIC}",
            f"Token {KEY_A}",
            "Bearer",
            "",
        ):
            record(f"auth {auth[:6]}", anon.get("/v1/requests", headers={"Authorization": auth}), 401)
            record(
                f"auth {auth[:6]} submit",
                anon.post("/v1/requests", json={"method": "POST", "path": "Call/"}, headers={"Authorization": auth}),
                401,
            )
        # Another tenant's request: 404 everywhere, ?wait too.
        rid = first["request_id"]
        for path in (f"/v1/requests/{rid}", f"/v1/requests/{rid}/deliveries", f"/v1/results/{done['api_id']}"):
            record(f"tenant B {path}", api_b.get(path), 404)
        record("tenant B wait", api_b.get(f"/v1/requests/{rid}", params={"wait": 1}), 404)
        # Forged and unsigned callbacks, also for a real api_id: 403.
        body = {"api_id": done["api_id"], "status": "forged"}
        record(
            "forged",
            anon.post(
                f"/callbacks/plivo?rid={rid}",
                content=json.dumps(body),
                headers=forged(f"{callback_url}?rid={rid}", body),
            ),
            403,
        )
        record("unsigned", anon.post("/callbacks/plivo", json={"api_id": str(uuid.uuid4())}), 403)
        record("unsigned GET", anon.get("/callbacks/plivo", params={"api_id": str(uuid.uuid4())}), 403)
        # Malformed, unsupported and oversized bodies.
        record(
            "bad json", api.post("/v1/requests", content=b"{nope", headers={"Content-Type": "application/json"}), 400
        )
        record(
            "not json", api.post("/v1/requests", content=b"method=POST", headers={"Content-Type": "text/plain"}), 415
        )
        record("bad fields", api.post("/v1/requests", json={"method": "PUT", "path": "/../x", "params": [1]}), 400)
        record("bad wait", api.get(f"/v1/requests/{rid}", params={"wait": "61"}), 400)
        record("bad page", api.get("/v1/requests", params={"limit": "0"}), 400)
        record(
            "bad callback",
            anon.post("/callbacks/plivo", content=b"{oops", headers={"Content-Type": "application/json"}),
            400,
            403,
        )
        record(
            "huge submission",
            api.post("/v1/requests", content=b"x" * 70_000, headers={"Content-Type": "application/json"}),
            413,
        )
    with web.client(key=None) as anon:  # a fresh connection: see the keep-alive bug in test_fuzz_regressions.py
        record(
            "huge callback",
            anon.post(
                "/callbacks/plivo",
                content=b'{"a":"' + b"x" * 70_000 + b'"}',
                headers={"Content-Type": "application/json"},
            ),
            413,
        )
    with web.client(KEY_A) as api:
        # Inputs that ended in exception traces when this test was written (see test_fuzz_regressions.py):
        # on web a JSON nested 5000 deep; on the worker a number it cannot encode. Their
        # answers are not the point here, the traces (if any) are.
        record(
            "deep",
            api.post("/v1/requests", content=b"[" * 5000 + b"]" * 5000, headers={"Content-Type": "application/json"}),
        )
        record(
            "overflow",
            api.post(
                "/v1/requests",
                content=b'{"method": "POST", "path": "Call/", "params": {"x": 1e999}}',
                headers={"Content-Type": "application/json"},
            ),
        )
        record("405", api.delete(f"/v1/requests/{rid}"), 405)
        record("404", api.get("/no/such/page"), 404)

    wait_for(lambda: sandbox.stats()["callbacks"]["pending"] == 0, 30, message="the sandbox's callbacks")
    problems: list[str] = []
    secrets = SECRETS | signatures
    for key, value in redis_dump(stack.env["REDIS_URL"]):
        problems += leaks(f"Redis key {key}", value, secrets)
    for answer in console:  # a notify_url's tokens too: none of these answers names it
        problems += leaks(f"the answer to {answer.request.url.path}", answer.content, secrets | URL_TOKENS)
    for what, answer in record.errors():
        assert answer.headers.get("content-type", "").startswith("application/json"), (what, answer.text[:200])
        problems += leaks(f"the {answer.status_code} answer to {what}", answer.content)
        problems += leaks(
            f"the headers of the answer to {what}", "\n".join(f"{k}: {v}" for k, v in answer.headers.items()).encode()
        )

    for worker in stack.workers:  # a graceful stop, so that shutdown logging is in the logs too
        worker.stop()
    web.service.stop()
    services = [web.service, *stack.workers]
    logs = {service.name: service.log_path.read_bytes() for service in services}
    for name, text in logs.items():
        problems += leaks(f"the log of {name}", text, secrets | URL_TOKENS)

    # The logs are there, and hold what they should, so that a leak would show.
    web_log = "\n".join(log_lines(logs[web.service.name], log_format))
    worker_log = log_lines(logs[stack.workers[0].name], log_format)
    assert "[DEBUG]" in web_log and 'POST /v1/requests HTTP/1.1" 202' in web_log
    assert 'GET /v1/requests HTTP/1.1" 401' in web_log and "POST /callbacks/plivo" in web_log
    assert len(worker_log) >= 5, worker_log  # rq logs every drain job it runs
    assert any("attempt 1: retry (HTTP 500)" in line for line in worker_log)
    assert problems == []


def test_an_api_key_sent_as_basic_user_name_is_not_logged(make_stack):
    """Was: gunicorn's default access_log_format has %(u)s, the Basic user name."""
    stack = make_stack(db=DB_BASIC, workers=0, ACCESS_LOG="-")
    basic = base64.b64encode(f"{KEY_A}:".encode()).decode()
    with stack.web.client(key=None) as anon:
        answer = anon.get("/v1/requests", headers={"Authorization": f"Basic {basic}"})
    assert answer.status_code == 401
    stack.web.service.stop()
    log = stack.web.service.log_path.read_bytes()
    assert b'GET /v1/requests HTTP/1.1" 401' in log
    assert leaks("the web log", log) == []


def test_a_redis_password_is_in_no_repr_and_no_connection_error():
    """Settings and the store's RedisTarget are what a traceback or a debug line shows."""
    from redis.exceptions import RedisError

    from config import Settings
    from local.redis_server import free_port
    from store.connection import connect, redis_target

    settings = Settings.from_env({"REDIS_URL": f"redis://answerback:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/3"})
    target = redis_target(settings)
    assert leaks("the settings' repr", repr(settings).encode()) == []
    assert leaks("the Redis target's repr", repr(target).encode()) == []
    assert "127.0.0.1" in repr(target)  # where it points is still shown
    client = connect(target, retries=0)
    with pytest.raises(RedisError) as refused:
        client.ping()
    assert leaks("a connection error", f"{refused.value!r} {refused.value}".encode()) == []
    assert leaks("the client's repr", repr(client).encode()) == []
