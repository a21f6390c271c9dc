"""The Plivo sandbox, run for real: gunicorn subprocesses, a real HTTP receiver for callbacks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plivo.utils import validate_v3_signature

from local.processes import wait_for
from local.redis_server import free_port
from sandbox.callback import Callback, CallbackTarget, as_params, flatten, signable
from sandbox.courier import Courier, DeliveryPlan, Timeouts
from sandbox.faults import Fault
from sandbox.options import Config, ConfigError
from sandbox.stats import Stats
from sandbox.timer import Timer

PROJECT = Path(__file__).resolve().parent.parent
AUTH_ID = "MATESTSANDBOX0000001"
AUTH_TOKEN = "test-sandbox-token"
ACCOUNT = f"/v1/Account/{AUTH_ID}"


# --- the callback receiver -------------------------------------------------------------


HOLD, CLOSE = "hold", "close"


class CallbackSink:
    """A tiny real HTTP server that keeps every callback it gets, keyed by its rid.

    It answers 200, or the statuses of `answers` in turn, where HOLD keeps the request
    unanswered until the sink closes (the sender's read timeout) and CLOSE closes the
    connection with no answer; a 3xx sends it back to the same URL."""

    def __init__(self, answers: list[int | str] | None = None) -> None:
        self.received: list[dict[str, Any]] = []
        self._answers = list(answers) if answers is not None else None
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, rid: str, extra: str = "") -> str:
        return f"{self.base}/callbacks/plivo?rid={rid}{extra}"

    def for_rid(self, rid: str) -> list[dict[str, Any]]:
        with self._lock:
            return [entry for entry in self.received if entry["rid"] == rid]

    def wait(self, rid: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        return wait_for(
            lambda: len(self.for_rid(rid)) >= count and self.for_rid(rid),
            timeout,
            message=f"{count} callback(s) for {rid}",
        )

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def _answer(self) -> int | str:
        with self._lock:
            return self._answers.pop(0) if self._answers else 200

    def _keep(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        entry = {
            "time": time.monotonic(),
            "method": handler.command,
            "url": self.base + handler.path,
            "headers": {key.lower(): value for key, value in handler.headers.items()},
            "body": body,
            "rid": parse_qs(urlsplit(handler.path).query).get("rid", [None])[0],
            "connection": handler.client_address,
        }
        with self._lock:
            self.received.append(entry)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                sink._keep(self)
                status = sink._answer()
                if status in (HOLD, CLOSE):
                    if status == HOLD:
                        sink._released.wait(30)
                    self.close_connection = True
                    return
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", self.path)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


# --- the sandbox processes -------------------------------------------------------------


class SandboxProcess:
    def __init__(self, command: list[str], port: int, env: dict[str, str]):
        self.base = f"http://127.0.0.1:{port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop(), with the process)
        self._process = subprocess.Popen(
            command, cwd=PROJECT, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT
        )
        wait_for(self._answers, 15.0, message="the sandbox to answer")

    def _answers(self) -> bool:
        if self._process.poll() is not None:
            self._log.seek(0)
            raise RuntimeError("sandbox exited:\n" + self._log.read().decode(errors="replace"))
        try:
            return httpx.get(self.base + "/_sandbox/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


def start_sandbox(command: list[str], port: int, **env: str) -> SandboxProcess:
    base_env = {"SANDBOX_AUTH_ID": AUTH_ID, "SANDBOX_AUTH_TOKEN": AUTH_TOKEN, "SANDBOX_CALLBACK_DELAY": "0.05"}
    return SandboxProcess(command, port, {**base_env, **env})


@pytest.fixture(scope="module")
def sink() -> Iterator[CallbackSink]:
    receiver = CallbackSink()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def sandbox_process() -> Iterator[SandboxProcess]:
    """The documented way: gunicorn with the sandbox's config, bind from SANDBOX_BIND."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", "sandbox/gunicorn_conf.py", "sandbox.app:create_app()"]
    process = start_sandbox(command, port, SANDBOX_BIND=f"127.0.0.1:{port}")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def form_sandbox_process() -> Iterator[SandboxProcess]:
    """The other entry point, `python -m sandbox --bind`, posting form-encoded callbacks."""
    port = free_port()
    command = [sys.executable, "-m", "sandbox", "--bind", f"127.0.0.1:{port}"]
    process = start_sandbox(command, port, SANDBOX_CALLBACK_FORMAT="form")
    yield process
    process.stop()


@pytest.fixture
def control(sandbox_process: SandboxProcess) -> Iterator[httpx.Client]:
    """The /_sandbox/ switches, reset around every test once earlier callbacks have gone out."""
    with httpx.Client(base_url=sandbox_process.base + "/_sandbox", timeout=10) as client:
        wait_for(lambda: client.get("/stats").json()["callbacks"]["pending"] == 0, 10.0, message="quiet callbacks")
        client.delete("/faults")
        client.delete("/stats")
        yield client
        client.delete("/faults")


@pytest.fixture
def account(sandbox_process: SandboxProcess, control: httpx.Client) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_process.base + ACCOUNT, auth=(AUTH_ID, AUTH_TOKEN), timeout=10) as client:
        yield client


def new_rid() -> str:
    return uuid.uuid4().hex


def is_uuid(value: Any) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except (TypeError, ValueError):
        return False


def signature_of(entry: dict[str, Any]) -> tuple[str, str]:
    headers = entry["headers"]
    assert headers["x-plivo-signature-ma-v3"] == headers["x-plivo-signature-v3"]
    return headers["x-plivo-signature-v3-nonce"], headers["x-plivo-signature-v3"]


def verifies(entry: dict[str, Any], params: dict[str, Any], token: str = AUTH_TOKEN) -> bool:
    nonce, signature = signature_of(entry)
    return validate_v3_signature(entry["method"], entry["url"], nonce, token, signature, params)


def form_params(body: bytes) -> dict[str, list[str]]:
    return parse_qs(body.decode("ascii"), keep_blank_values=True)


# --- authentication and input ----------------------------------------------------------


@pytest.mark.parametrize("auth", [None, (AUTH_ID, "wrong-token"), ("MAOTHERACCOUNT000000", AUTH_TOKEN)])
def test_missing_or_wrong_credentials_answer_401(sandbox_process: SandboxProcess, control: httpx.Client, auth) -> None:
    response = httpx.get(sandbox_process.base + ACCOUNT + "/Call/", auth=auth)
    assert response.status_code == 401
    assert response.json()["error"] == "authentication failed"
    assert is_uuid(response.json()["api_id"])


def test_path_account_other_than_credentials_is_401(sandbox_process: SandboxProcess, control: httpx.Client) -> None:
    response = httpx.get(sandbox_process.base + "/v1/Account/MAOTHERACCOUNT000000/Call/", auth=(AUTH_ID, AUTH_TOKEN))
    assert response.status_code == 401
    assert control.get("/requests?limit=1").json()["requests"][0]["auth_ok"] is True


def test_post_must_be_a_json_object(account: httpx.Client) -> None:
    form = account.post("/Call/", data={"to": "1"})
    assert form.status_code == 415 and is_uuid(form.json()["api_id"]) and form.json()["error"]
    for body in (b"[1, 2]", b"not json", b""):
        answer = account.post("/Call/", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, body
        assert answer.json()["error"] == "body must be a JSON object"


def test_every_answer_carries_a_fresh_api_id(account: httpx.Client) -> None:
    ids = {account.post("/Call/", json={"to": "1"}).json()["api_id"] for _ in range(3)}
    assert len(ids) == 3 and all(is_uuid(api_id) for api_id in ids)


# --- objects and lists -----------------------------------------------------------------


def test_created_objects_can_be_read_changed_and_deleted(account: httpx.Client) -> None:
    created = account.post("/Call/", json={"to": "14155550100"})
    assert created.status_code == 201 and created.json()["message"] == "call fired"
    call = f"/Call/{created.json()['request_uuid']}/"
    assert account.get(call).json()["to"] == "14155550100"
    changed = account.post(call.rstrip("/"), json={"legs": "both"})
    assert changed.status_code == 202 and changed.json()["message"] == "changed"
    record = account.post(call + "Record/", json={"time_limit": 60})
    assert record.status_code == 201 and record.json()["message"] == "created" and is_uuid(record.json()["id"])
    assert account.get(call).json()["legs"] == "both"
    deleted = account.delete(call)
    assert deleted.status_code == 204 and deleted.content == b""
    for method in ("GET", "DELETE"):
        missing = account.request(method, call)
        assert missing.status_code == 404 and missing.json()["error"] == "not found"
    assert account.get(call + "Record/").status_code == 404


def test_message_creation_answers_like_plivo(account: httpx.Client) -> None:
    answer = account.post("/Message/", json={"src": "1", "dst": "2", "text": "hi"}).json()
    assert answer["message"] == "message(s) queued"
    assert len(answer["message_uuid"]) == 1 and is_uuid(answer["message_uuid"][0])


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=21", "limit=abc", "limit=1.5", "limit=-1", "limit=", "offset=-1", "offset=x", "offset=2.0"],
)
def test_limit_and_offset_are_validated(account: httpx.Client, query: str) -> None:
    answer = account.get(f"/Call/?{query}")
    assert answer.status_code == 400
    assert query.split("=")[0] in answer.json()["error"] and is_uuid(answer.json()["api_id"])


def test_lists_page_by_object_offset_with_next_and_previous(account: httpx.Client) -> None:
    call_id = account.post("/Call/", json={"to": "1"}).json()["request_uuid"]
    records = f"/Call/{call_id}/Record/"
    created = [account.post(records, json={"n": n}).json()["id"] for n in range(25)]
    link = f"{ACCOUNT}{records}"

    first = account.get(records).json()
    assert first["meta"] == {
        "limit": 20,
        "offset": 0,
        "total_count": 25,
        "next": f"{link}?limit=20&offset=20",
        "previous": None,
    }
    assert [item["id"] for item in first["objects"]] == created[::-1][:20]

    last = account.get(records, params={"offset": 20}).json()
    assert last["meta"]["next"] is None and last["meta"]["previous"] == f"{link}?limit=20&offset=0"
    assert [item["n"] for item in last["objects"]] == [4, 3, 2, 1, 0]

    middle = account.get(records, params={"limit": 10, "offset": 5}).json()["meta"]
    assert middle["next"] == f"{link}?limit=10&offset=15" and middle["previous"] == f"{link}?limit=10&offset=0"
    assert account.get(records, params={"offset": 100}).json()["objects"] == []


# --- asynchronous requests and their callbacks -----------------------------------------


def test_async_post_delivers_the_real_answer_signed_with_the_same_api_id(
    account: httpx.Client, sink: CallbackSink
) -> None:
    rid = new_rid()
    answer = account.post("/Call/", json={"to": "1", "callback_url": sink.url(rid)})
    assert answer.status_code == 200
    assert answer.json() == {"message": "async api spawned", "api_id": answer.json()["api_id"]}

    [entry] = sink.wait(rid)
    assert entry["method"] == "POST" and entry["headers"]["content-type"] == "application/json"
    body = json.loads(entry["body"])
    assert body["api_id"] == answer.json()["api_id"]
    assert body["message"] == "call fired" and is_uuid(body["request_uuid"])
    assert verifies(entry, body)
    assert not verifies(entry, body, token="another-token")
    stored = account.get(f"/Call/{body['request_uuid']}/").json()
    assert "callback_url" not in stored and "callback_method" not in stored


def test_get_callback_appends_fields_to_the_existing_query(account: httpx.Client, sink: CallbackSink) -> None:
    rid = new_rid()
    answer = account.post(
        "/Message/", json={"text": "llamada — ✓", "callback_url": sink.url(rid, "&tag=x"), "callback_method": "get"}
    )
    [entry] = sink.wait(rid)
    assert entry["method"] == "GET" and entry["body"] == b""
    query = parse_qs(urlsplit(entry["url"]).query)
    assert query["rid"] == [rid] and query["tag"] == ["x"]
    assert query["api_id"] == [answer.json()["api_id"]] and query["message"] == ["message(s) queued"]
    assert is_uuid(query["message_uuid"][0])
    fields = {key: values for key, values in query.items() if key not in ("rid", "tag")}
    assert verifies(entry, {}) and verifies(entry, fields)


def test_get_callback_carries_non_ascii_fields_signed_as_utf8(account: httpx.Client, sink: CallbackSink) -> None:
    message_id = account.post("/Message/", json={"text": "llamada — ✓"}).json()["message_uuid"][0]
    rid = new_rid()
    account.get(f"/Message/{message_id}/", params={"callback_url": sink.url(rid), "callback_method": "GET"})
    [entry] = sink.wait(rid)
    assert parse_qs(urlsplit(entry["url"]).query)["text"] == ["llamada — ✓"]
    assert verifies_get(entry["url"], *signature_of(entry))


def test_async_get_of_a_list_delivers_meta_and_objects(account: httpx.Client, sink: CallbackSink) -> None:
    account.post("/Recording/", json={"n": 1})
    account.post("/Recording/", json={"n": 2})
    rid = new_rid()
    answer = account.get("/Recording/", params={"limit": 1, "callback_url": sink.url(rid)})
    [entry] = sink.wait(rid)
    body = json.loads(entry["body"])
    assert body["api_id"] == answer.json()["api_id"] and body["meta"]["total_count"] == 2
    assert body["meta"]["next"] == f"{ACCOUNT}/Recording/?limit=1&offset=1"
    assert verifies(entry, signable(body))


def test_async_delete_reports_deleted(account: httpx.Client, sink: CallbackSink) -> None:
    call_id = account.post("/Call/", json={"to": "1"}).json()["request_uuid"]
    rid = new_rid()
    answer = account.delete(f"/Call/{call_id}/", params={"callback_url": sink.url(rid)})
    assert answer.status_code == 200
    [entry] = sink.wait(rid)
    assert json.loads(entry["body"]) == {"api_id": answer.json()["api_id"], "message": "deleted"}
    assert account.get(f"/Call/{call_id}/").status_code == 404


def test_sync_errors_are_answered_at_once_without_a_callback(
    account: httpx.Client, control: httpx.Client, sink: CallbackSink
) -> None:
    url = sink.url(new_rid())
    assert account.get(f"/Call/{uuid.uuid4()}/", params={"callback_url": url}).status_code == 404
    assert account.get("/Call/", params={"limit": 50, "callback_url": url}).status_code == 400
    assert account.post("/Call/", json={"callback_url": url, "callback_method": "PUT"}).status_code == 400
    assert account.post("/Call/", json={"callback_url": "ftp://example.com/"}).status_code == 400
    assert control.get("/stats").json()["callbacks"]["planned"] == 0


def test_form_callbacks_are_form_encoded_and_signed(form_sandbox_process: SandboxProcess, sink: CallbackSink) -> None:
    rid = new_rid()
    with httpx.Client(base_url=form_sandbox_process.base + ACCOUNT, auth=(AUTH_ID, AUTH_TOKEN)) as client:
        answer = client.post("/Message/", json={"text": "hi", "callback_url": sink.url(rid)})
    [entry] = sink.wait(rid)
    assert entry["headers"]["content-type"] == "application/x-www-form-urlencoded"
    params = form_params(entry["body"])
    assert params["api_id"] == [answer.json()["api_id"]] and params["message"] == ["message(s) queued"]
    assert verifies(entry, params)


def test_callback_delay_range_holds_the_callback_back(
    account: httpx.Client, control: httpx.Client, sink: CallbackSink
) -> None:
    control.post("/faults", json={"callback_delay": {"rate": 1, "seconds": [0.3, 0.4]}})
    rid = new_rid()
    account.post("/Call/", json={"callback_url": sink.url(rid)})
    answered = time.monotonic()
    [entry] = sink.wait(rid)
    assert entry["time"] - answered >= 0.25


# --- callback faults -------------------------------------------------------------------


def test_early_callback_arrives_before_the_answer(
    account: httpx.Client, control: httpx.Client, sink: CallbackSink
) -> None:
    control.post("/faults", json={"early_callback": 1})
    rid = new_rid()
    answer = account.post("/Call/", json={"callback_url": sink.url(rid)})
    [entry] = sink.for_rid(rid)
    assert json.loads(entry["body"])["api_id"] == answer.json()["api_id"]
    assert control.get("/requests?limit=1").json()["requests"][0]["faults"] == ["early_callback"]


def test_duplicate_callback_is_delivered_twice_with_fresh_nonces(
    account: httpx.Client, control: httpx.Client, sink: CallbackSink
) -> None:
    control.post("/faults", json={"duplicate_callback": 1})
    rid = new_rid()
    account.post("/Call/", json={"callback_url": sink.url(rid)})
    first, second = sink.wait(rid, 2)
    assert first["body"] == second["body"]
    assert signature_of(first)[0] != signature_of(second)[0]
    assert all(verifies(entry, json.loads(entry["body"])) for entry in (first, second))


def test_dropped_callback_is_never_planned(account: httpx.Client, control: httpx.Client, sink: CallbackSink) -> None:
    control.post("/faults", json={"drop_callback": {"rate": 1, "paths": ["Call"]}})
    dropped, kept = new_rid(), new_rid()
    assert account.post("/Call/", json={"callback_url": sink.url(dropped)}).status_code == 200
    account.post("/Message/", json={"callback_url": sink.url(kept)})
    sink.wait(kept)
    callbacks = control.get("/stats").json()["callbacks"]
    assert callbacks["dropped"] == 1 and callbacks["planned"] == 1
    assert sink.for_rid(dropped) == []


# --- refusing faults -------------------------------------------------------------------


def test_status_429_refuses_without_acting_and_sends_retry_after(
    account: httpx.Client, control: httpx.Client, sink: CallbackSink
) -> None:
    control.post("/faults", json={"status_429": {"rate": 1, "retry_after": 7}})
    rid = new_rid()
    answer = account.post("/Call/", json={"callback_url": sink.url(rid)})
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "7"
    assert is_uuid(answer.json()["api_id"]) and answer.json()["error"]
    stats = control.get("/stats").json()
    assert stats["by_rid"] == {rid: 1} and stats["acted_by_rid"] == {rid: 0}
    assert stats["callbacks"]["planned"] == 0 and stats["requests"]["by_status"] == {"429": 1}


@pytest.mark.parametrize("status", [500, 503])
def test_status_5xx_refuses_without_acting(account: httpx.Client, control: httpx.Client, status: int) -> None:
    control.post("/faults", json={"status_5xx": {"rate": 1, "status": [status]}})
    answer = account.post("/Call/", json={"to": "1"})
    assert answer.status_code == status and answer.json()["error"]
    assert control.get("/requests?limit=1").json()["requests"][0]["acted"] is False


def test_status_4xx_answers_a_json_error(account: httpx.Client, control: httpx.Client) -> None:
    control.post("/faults", json={"status_4xx": {"rate": 1, "error": "invalid to"}})
    answer = account.post("/Call/", json={"to": "1"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid to"


def test_fault_filters_select_paths_and_methods(account: httpx.Client, control: httpx.Client) -> None:
    call_id = account.post("/Call/", json={}).json()["request_uuid"]
    control.post("/faults", json={"status_4xx": {"rate": 1, "paths": ["Message"], "methods": ["post"]}})
    assert account.post("/Message/", json={}).status_code == 400
    assert account.get("/Message/").status_code == 200
    assert account.post("/Call/", json={}).status_code == 201
    control.post("/faults", json={"status_4xx": {"paths": ["Call/*"], "methods": None}})
    assert account.get(f"/Call/{call_id}/").status_code == 400
    assert account.get("/Call/").status_code == 400
    assert account.post("/Message/", json={}).status_code == 201


# --- faults after acting ---------------------------------------------------------------


def test_slow_answer_acts_then_outlasts_the_client_timeout(
    sandbox_process: SandboxProcess, account: httpx.Client, control: httpx.Client, sink: CallbackSink
) -> None:
    control.post("/faults", json={"slow_answer": {"rate": 1, "seconds": 1.0}})
    rid = new_rid()
    with pytest.raises(httpx.ReadTimeout):
        account.post("/Call/", json={"callback_url": sink.url(rid)}, timeout=httpx.Timeout(5, read=0.3))
    sink.wait(rid)
    [logged] = control.get("/requests", params={"rid": rid}).json()["requests"]
    assert logged["acted"] is True and logged["status"] == 200 and logged["faults"] == ["slow_answer"]


def test_reset_after_receive_acts_then_resets_the_connection(
    sandbox_process: SandboxProcess, account: httpx.Client, control: httpx.Client, sink: CallbackSink
) -> None:
    control.post("/faults", json={"reset_after_receive": {"rate": 1, "methods": ["POST"]}})
    rid = new_rid()
    with pytest.raises(httpx.TransportError) as failure:
        account.post("/Call/", json={"to": "1", "callback_url": sink.url(rid)})
    assert isinstance(failure.value, (httpx.ReadError, httpx.RemoteProtocolError))
    [entry] = sink.wait(rid)
    call_id = json.loads(entry["body"])["request_uuid"]
    control.delete("/faults")
    assert account.get(f"/Call/{call_id}/").json()["to"] == "1"
    stats = control.get("/stats").json()
    assert stats["by_rid"][rid] == 1 and stats["requests"]["by_status"]["reset"] == 1


# --- observation -----------------------------------------------------------------------


def test_by_rid_counts_every_receipt_of_a_request(
    account: httpx.Client, control: httpx.Client, sink: CallbackSink
) -> None:
    rid, other = new_rid(), new_rid()
    for _ in range(3):
        account.post("/Call/", json={"callback_url": sink.url(rid)})
    account.get("/Call/", params={"callback_url": sink.url(other)})
    httpx.post(str(account.base_url).rstrip("/") + "/Call/", json={"callback_url": sink.url(other)})
    assert control.get("/stats").json()["by_rid"] == {rid: 3, other: 2}
    sink.wait(rid, 3)
    callbacks = wait_for(lambda: (c := control.get("/stats").json()["callbacks"])["pending"] == 0 and c)
    assert callbacks["delivered"] == 4 and callbacks["by_status"] == {"200": 4}


def test_request_log_shows_auth_json_body_and_status(account: httpx.Client, control: httpx.Client) -> None:
    before = time.time()
    account.post("/Call/", json={"to": "1"}, params={"debug": "1"})
    account.get("/Call/", params={"limit": 5})
    post, get = control.get("/requests", params={"limit": 2}).json()["requests"]
    assert post["method"] == "POST" and post["path"] == f"{ACCOUNT}/Call/" and post["query"] == {"debug": "1"}
    assert post["content_type"] == "application/json" and post["json"] == {"to": "1"}
    assert post["auth_ok"] is True and post["status"] == 201 and post["time"] >= before - 1
    assert get["json"] is None and get["query"] == {"limit": "5"} and get["status"] == 200
    assert control.get("/requests", params={"limit": 0}).status_code == 400


def test_fault_settings_merge_validate_and_reset(control: httpx.Client) -> None:
    merged = control.post("/faults", json={"status_429": {"rate": 0.5, "retry_after": 3}}).json()
    merged = control.post("/faults", json={"status_429": 0.25}).json()
    assert merged["status_429"] == {"rate": 0.25, "paths": None, "methods": None, "times": None, "retry_after": 3}
    for bad in (
        {"no_such_fault": 1},
        {"status_429": {"rate": 2}},
        {"slow_answer": {"seconds": [3, 1]}},
        {"status_5xx": {"status": 404}},
        {"drop_callback": {"colour": "red"}},
        [1],
    ):
        assert control.post("/faults", json=bad).status_code == 400, bad
    assert control.get("/faults").json()["status_429"]["rate"] == 0.25
    assert control.delete("/faults").json()["status_429"]["rate"] == 0.0


# --- the parts, without a server -------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=5), inner, max_size=3),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(min_size=1, max_size=6), json_values, max_size=4)


@settings(max_examples=60, deadline=None, database=None)
@given(body=json_objects)
def test_every_encoding_of_any_body_verifies_with_the_sdk(body: dict[str, Any]) -> None:
    url = "http://example.com:8080/callbacks/plivo?rid=r1"
    as_json = Callback(CallbackTarget(url), body).outgoing(AUTH_TOKEN, "json")
    assert json.loads(as_json.content) == body
    assert validate_v3_signature(
        "POST",
        as_json.url,
        as_json.headers["X-Plivo-Signature-V3-Nonce"],
        AUTH_TOKEN,
        as_json.headers["X-Plivo-Signature-V3"],
        signable(body),
    )
    as_form = Callback(CallbackTarget(url), body).outgoing(AUTH_TOKEN, "form")
    params = form_params(as_form.content)
    assert params == as_params(flatten(body))
    assert validate_v3_signature(
        "POST",
        as_form.url,
        as_form.headers["X-Plivo-Signature-V3-Nonce"],
        AUTH_TOKEN,
        as_form.headers["X-Plivo-Signature-V3"],
        params,
    )
    as_get = Callback(CallbackTarget(url, "GET"), body).outgoing(AUTH_TOKEN, "json")
    assert as_get.content is None and as_get.url.startswith(url)
    headers = as_get.headers
    assert verifies_get(as_get.url, headers["X-Plivo-Signature-V3-Nonce"], headers["X-Plivo-Signature-V3"])


def verifies_get(url: str, nonce: str, signature: str) -> bool:
    """The SDK given the full URL, where it can read it: on Python 3 it raises past ASCII in the query.

    Then it is given the query as parameters instead, as Plivo's signature V3 rule for GET merges them
    (query parameters and the request's parameters together).
    """
    base, _, query = url.partition("?")
    split = validate_v3_signature("GET", base, nonce, AUTH_TOKEN, signature, parse_qs(query, keep_blank_values=True))
    if unquote_plus(query).isascii():
        return split and validate_v3_signature("GET", url, nonce, AUTH_TOKEN, signature, {})
    return split


def test_flatten_names_nested_fields() -> None:
    body = {"meta": {"limit": 20, "next": None}, "uuids": ["a", "b"], "objects": [{"id": "x"}], "ok": True}
    assert flatten(body) == [
        ("meta.limit", "20"),
        ("meta.next", ""),
        ("uuids", "a"),
        ("uuids", "b"),
        ("objects.0.id", "x"),
        ("ok", "true"),
    ]


# Plivo's 2 s and 40 s, shortened where a test waits for them to pass; long enough elsewhere
# that a stall of a busy machine is not taken for a timeout (and a retry).
SHORT = Timeouts(connect=0.5, read=0.5)
PATIENT = Timeouts(connect=10, read=10)


def delivered_to(url: str, timeout: Timeouts = PATIENT) -> dict[str, Any]:
    """One callback through a real courier; its callback counters once the delivery is over."""
    stats = Stats()
    courier = Courier(Config(auth_id=AUTH_ID, auth_token=AUTH_TOKEN), stats, 2, timeout)
    courier.deliver_now(Callback(CallbackTarget(url), {"api_id": "a"}))
    return stats.to_json()["callbacks"]


def sent_to_sink(answers: list[int | str]) -> tuple[int, dict[str, Any]]:
    """How many requests a sink answering `answers` got for one callback, and the counters."""
    receiver = CallbackSink(answers)
    try:
        callbacks = delivered_to(receiver.url("r"), SHORT if HOLD in answers else PATIENT)
        return len(receiver.for_rid("r")), callbacks
    finally:
        receiver.close()


@pytest.mark.parametrize("status, outcome", [(200, "delivered"), (500, "failed"), (302, "failed")])
def test_courier_takes_any_answer_as_the_end_of_a_delivery(status: int, outcome: str) -> None:
    attempts, callbacks = sent_to_sink([status])
    assert attempts == 1 and callbacks["retries"] == 0 and callbacks[outcome] == 1
    assert callbacks["by_status"] == {str(status): 1} and callbacks["errors"] == {}


def test_courier_retries_once_after_a_read_timeout() -> None:
    attempts, callbacks = sent_to_sink([HOLD, 200])
    assert attempts == 2 and callbacks["retries"] == 1 and callbacks["delivered"] == 1
    attempts, callbacks = sent_to_sink([HOLD, HOLD, 200])
    assert attempts == 2 and callbacks["retries"] == 1 and callbacks["failed"] == 1
    assert callbacks["errors"] == {"READ_TIMEOUT": 1}


def test_courier_does_not_retry_a_connection_closed_without_an_answer() -> None:
    attempts, callbacks = sent_to_sink([CLOSE, 200])
    assert attempts == 1 and callbacks["retries"] == 0 and callbacks["failed"] == 1
    assert callbacks["errors"] == {"GOT_NOTHING": 1}


def test_courier_does_not_retry_a_refused_connection() -> None:
    callbacks = delivered_to(f"http://127.0.0.1:{free_port()}/cb")
    assert callbacks["retries"] == 0 and callbacks["failed"] == 1
    assert callbacks["errors"] == {"COULDNT_CONNECT": 1}


@pytest.mark.skipif(sys.platform != "linux", reason="other systems refuse a connection to a full accept queue")
def test_courier_retries_once_after_a_connect_timeout() -> None:
    """A listener whose accept queue is full: Linux drops the SYNs, so connecting times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued: list[socket.socket] = []
        for _ in range(64):  # until the queue is full: a connection that does not get through
            queued.append(socket.socket())
            queued[-1].settimeout(0.2)
            if queued[-1].connect_ex(listener.getsockname()) != 0:
                break
        else:
            pytest.fail("64 connections got through to a listener with a backlog of 0")
        try:
            callbacks = delivered_to(f"http://127.0.0.1:{listener.getsockname()[1]}/cb", SHORT)
        finally:
            for sock in queued:
                sock.close()
    assert callbacks["retries"] == 1 and callbacks["failed"] == 1
    assert callbacks["errors"] == {"CONNECT_TIMEOUT": 1}


def test_courier_keeps_its_connection_alive_between_callbacks(sink: CallbackSink) -> None:
    courier = Courier(Config(auth_id=AUTH_ID, auth_token=AUTH_TOKEN), Stats(), 2)
    for _ in range(3):
        courier.deliver_now(Callback(CallbackTarget(sink.url("kept")), {"api_id": "a"}))
    assert len({entry["connection"] for entry in sink.for_rid("kept")}) == 1


def test_courier_delivers_on_a_fresh_connection_when_the_plan_says_so(sink: CallbackSink) -> None:
    """Plivo delivers every callback on a connection of its own (the fresh_connection fault),
    closed once answered; a later kept-alive delivery then opens one of its own too."""
    courier = Courier(Config(auth_id=AUTH_ID, auth_token=AUTH_TOKEN), Stats(), 2)
    fresh = DeliveryPlan.from_faults({"fresh_connection": Fault(rate=1)}, 0.05)
    assert fresh.fresh
    for _ in range(3):
        courier.deliver_now(Callback(CallbackTarget(sink.url("fresh")), {"api_id": "a"}), fresh.fresh)
    courier.deliver_now(Callback(CallbackTarget(sink.url("fresh")), {"api_id": "a"}))
    assert len({entry["connection"] for entry in sink.for_rid("fresh")}) == 4


def test_delivery_plan_follows_the_faults() -> None:
    on = Fault(rate=1, options={"seconds": [2.0, 3.0]})
    assert DeliveryPlan.from_faults({}, 0.05) == DeliveryPlan(False, (0.05,))
    assert DeliveryPlan.from_faults({"drop_callback": on, "early_callback": on}, 0.05).dropped
    assert DeliveryPlan.from_faults({"early_callback": on, "duplicate_callback": on}, 0.05) == DeliveryPlan(
        True, (0.05,)
    )
    delays = DeliveryPlan.from_faults({"callback_delay": on, "duplicate_callback": on}, 0.05).delays
    assert len(delays) == 2 and all(2.0 <= delay <= 3.0 for delay in delays)


def test_timer_fires_items_in_due_order() -> None:
    fired: list[str] = []
    timer = Timer(fired.append)
    timer.add(0.2, "late")
    timer.add(0.0, "now")
    timer.add(0.1, "soon")
    wait_for(lambda: len(fired) == 3, 3.0, message="the timer")
    assert fired == ["now", "soon", "late"]


def test_config_reads_the_environment_and_refuses_bad_values() -> None:
    config = Config.from_env({"SANDBOX_CALLBACK_DELAY": "0.5", "SANDBOX_CALLBACK_FORMAT": "FORM"})
    assert (config.auth_id, config.bind, config.callback_delay, config.callback_format) == (
        "MASANDBOX00000000000",
        "127.0.0.1:8010",
        0.5,
        "form",
    )
    for env in (
        {"SANDBOX_AUTH_ID": "XX1"},
        {"SANDBOX_CALLBACK_DELAY": "-1"},
        {"SANDBOX_CALLBACK_DELAY": "soon"},
        {"SANDBOX_CALLBACK_FORMAT": "xml"},
    ):
        with pytest.raises(ConfigError):
            Config.from_env(env)


def test_a_fault_with_times_fires_only_that_often(control, account):
    control.post("/faults", json={"status_5xx": {"rate": 1.0, "times": 2}}).raise_for_status()
    statuses = [account.get("Call/").status_code for _ in range(4)]
    assert statuses == [500, 500, 200, 200]
