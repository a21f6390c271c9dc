"""Redis killed with SIGKILL mid-stream, with no spool and a short CALLBACK_HOLD:
no callback answered 200 is lost, the webhook answers 503 (never 200) once the hold
is over while Redis is down, and web and workers reconnect by themselves once it is
back (AOF, appendfsync everysec)."""

from __future__ import annotations

import threading
import uuid

import pytest

from local.processes import wait_for
from local.redis_server import RedisServer
from tests.support.api import submit, wait_status
from tests.support.services import Stack
from tests.support.signed_callbacks import delivery

pytestmark = pytest.mark.slow


@pytest.fixture
def crash_stack(base_env, workdir, sandbox):
    server = RedisServer(workdir / f"redis-crash-{uuid.uuid4().hex[:6]}").start()
    env = {
        **base_env,
        "REDIS_URL": server.url,
        "SWEEP_INTERVAL": "1",
        "LEASE_SECONDS": "3",
        "DRAINER_STALE_SECONDS": "2",
        "CALLBACK_HOLD": "1",
    }
    stack = Stack(env, workdir, 0)
    stack.start_web()
    stack.start_worker()
    yield server, stack
    stack.stop()
    server.stop()


def deliver(client, web_url: str, record: dict) -> int:
    """Plivo's delivery of `record`'s callback: the answer's status (0: no answer)."""
    answer = delivery(client, web_url, record)
    return answer.status_code if answer is not None else 0


def test_redis_killed_during_a_stream_of_callbacks(crash_stack, sandbox):
    server, stack = crash_stack
    sandbox.faults(drop_callback=1.0)
    with stack.web.client() as api:
        records = [wait_status(api, submit(api)["request_id"], "pending") for _ in range(60)]
        answers: dict[str, int] = {}
        killed, restarted = threading.Event(), threading.Event()

        def stream():
            with stack.web.client(key=None) as client:
                for i, record in enumerate(records):
                    if i == 20:
                        server.kill()
                        killed.set()
                    if i == 35:
                        server.start()
                        restarted.set()
                    answers[record["request_id"]] = deliver(client, stack.web.url, record)

        streamer = threading.Thread(target=stream)
        streamer.start()
        streamer.join(120)
        assert killed.is_set() and restarted.is_set()
        codes = [answers[r["request_id"]] for r in records]
        assert set(codes) <= {200, 503}, codes
        assert codes[:20] == [200] * 20 and 503 in codes[20:35]
        acked = [r for r in records if answers[r["request_id"]] == 200]
        for record in acked:
            stored = api.get(f"/v1/requests/{record['request_id']}").json()
            assert stored["status"] == "completed", stored
            assert stored["response"] == {"api_id": record["api_id"], "status": "delivered"}
        # the sender's retry of each refused delivery is taken once Redis is back
        with stack.web.client(key=None) as client:
            for record in records:
                if answers[record["request_id"]] == 503:
                    assert deliver(client, stack.web.url, record) == 200
        assert all(api.get(f"/v1/requests/{r['request_id']}").json()["status"] == "completed" for r in records)
        # the worker reconnected by itself too
        sandbox.faults(drop_callback=0.0)
        fresh = wait_status(api, submit(api)["request_id"], "completed", timeout=30)
        assert fresh["response"]["api_id"] == fresh["api_id"]
    wait_for(lambda: server.process.poll() is None, message="redis still up")


def test_a_forged_callback_is_refused_403_while_redis_is_down(crash_stack):
    """The signature is checked before Redis is needed: an outage must not turn a refusal
    into a 503 (nor hold a forged delivery for CALLBACK_HOLD)."""
    server, stack = crash_stack
    server.kill()
    with stack.web.client(key=None) as client:
        path = f"/callbacks/plivo?rid={uuid.uuid4()}"
        answer = client.post(
            path,
            json={"api_id": str(uuid.uuid4())},
            headers={"X-Plivo-Signature-V3-Nonce": "12345", "X-Plivo-Signature-V3": "forged"},
        )
    assert answer.status_code == 403, (answer.status_code, answer.text)
    assert answer.json()["error"]
