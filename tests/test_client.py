"""The Python client (client/answerback_client) against the real stack: typed records, waiting,
paging, errors, bulk, the asyncio twin, and submissions retried across a web restart."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from answerback_client import (
    AnswerbackError,
    AsyncClient,
    AsyncRequest,
    Client,
    Conflict,
    Delivery,
    Event,
    InvalidRequest,
    NotFound,
    Request,
    Timeline,
    Unauthorized,
    Unavailable,
)
from answerback_client.protocol import Backoff, retry_after
from local.processes import wait_for
from local.redis_server import RedisServer, free_port
from tests.support.services import KEY_A, KEY_B, Stack

CALL = {"from": "14155550100", "to": "14155550101", "answer_url": "https://example.com/answer"}


def message(n: int) -> dict:
    return {
        "method": "POST",
        "path": "Message/",
        "params": {"src": "14155550100", "dst": f"1415555{n:04d}", "text": "hi"},
    }


@pytest.fixture
def ab(web, worker) -> Iterator[Client]:
    with Client(web.url, KEY_A) as client:
        yield client


def sent_upstream(sandbox, rid: str) -> list[dict]:
    return [r for r in sandbox.requests() if r["rid"] == rid]


def test_submit_then_wait_gives_a_typed_completed_record(ab, sandbox):
    req = ab.submit("POST", "Call/", CALL)
    assert isinstance(req, Request) and req.status == "queued" and not req.finished and not req.replayed
    done = req.wait(timeout=30)
    assert done.status == "completed" and done.finished and done.request_id == req.request_id
    assert done.api_id == done.response["api_id"] and done.response["message"] == "call fired"
    assert done.error is None and done.late is False and done.attempts == 1 and done.deliveries == 1
    assert isinstance(done.completed_at, datetime) and done.completed_at.tzinfo == UTC
    assert done.submitted_at <= done.sent_at <= done.completed_at < done.deadline
    assert done.raw["request_id"] == req.request_id and done.raw["status"] == "completed"
    assert ab.get(req.request_id).status == "completed"
    assert ab.result(done.api_id, wait=5).request_id == req.request_id
    [delivery] = ab.deliveries(req.request_id)
    assert isinstance(delivery, Delivery) and delivery.api_id == done.api_id and delivery.method == "POST"
    assert delivery.body["request_uuid"] == done.response["request_uuid"]
    assert done.submitted_at <= delivery.received_at <= done.completed_at
    timeline = ab.events(req.request_id)
    assert isinstance(timeline, Timeline) and timeline.request_id == req.request_id and timeline.dropped == 0
    assert [e.event for e in timeline] == ["submitted", "sent", "api_id", "callback", "completed"]
    submitted, sent, named, callback, completed = timeline.events
    assert isinstance(submitted, Event) and submitted.at == done.submitted_at and submitted.idempotency_key
    assert sent.attempt == 1 and sent.outcome == "accepted" and isinstance(sent.latency_ms, int)
    assert named.api_id == done.api_id and callback.verdict == "matched" and callback.signature == "valid"
    assert completed.at == done.completed_at and completed.reason is None and completed.raw["event"] == "completed"
    assert len(sent_upstream(sandbox, req.request_id)) == 1


def test_the_same_idempotency_key_returns_the_first_request(ab, sandbox):
    first = ab.submit("POST", "Call/", CALL, idempotency_key="order-1234")
    again = ab.submit("POST", "Call/", CALL, idempotency_key="order-1234")
    assert again.request_id == first.request_id and again.replayed and not first.replayed
    assert first.wait(30).status == "completed"
    assert len(sent_upstream(sandbox, first.request_id)) == 1
    with pytest.raises(InvalidRequest) as refused:
        ab.submit("POST", "Call/", {**CALL, "to": "14155550102"}, idempotency_key="order-1234")
    assert refused.value.status == 422 and "Idempotency-Key" in refused.value.message


def test_wait_answers_the_record_as_it_stands_when_the_time_runs_out(ab, sandbox):
    sandbox.faults(drop_callback=1.0)
    req = ab.submit("POST", "Call/", CALL)
    started = time.monotonic()
    record = req.wait(timeout=2)
    assert record.status == "pending" and not record.finished
    assert 1.5 <= time.monotonic() - started < 15
    assert ab.get(req.request_id, wait=1).status == "pending"


def test_errors_are_exceptions_with_the_servers_message_and_field_errors(ab, web):
    with pytest.raises(InvalidRequest) as bad:
        ab.submit("POST", "/Account/x/Call/", {"to": "1"}, callback_method="PUT")
    assert bad.value.status == 400 and bad.value.message == "invalid submission"
    assert set(bad.value.fields) == {"path", "callback_method"} and "path:" in str(bad.value)
    with pytest.raises(InvalidRequest, match="callback_timeout must be at most"):
        ab.submit("POST", "Call/", CALL, callback_timeout=10**8)
    with pytest.raises(InvalidRequest) as no_notifications:  # this web has no NOTIFY_HOSTS
        ab.submit("POST", "Call/", CALL, notify_url="https://example.com/hook")
    assert no_notifications.value.status == 422
    with pytest.raises(InvalidRequest, match="status must be one of"):
        list(ab.requests(status="bogus"))
    with pytest.raises(NotFound) as missing:
        ab.get(str(uuid.uuid4()))
    assert missing.value.status == 404 and isinstance(missing.value, AnswerbackError)
    with pytest.raises(NotFound):
        ab.result(str(uuid.uuid4()), wait=1)
    mine = ab.submit("POST", "Call/", CALL)
    with Client(web.url, KEY_B) as other, pytest.raises(NotFound):
        other.get(mine.request_id)
    with Client(web.url, "not-a-key") as stranger, pytest.raises(Unauthorized) as refused:
        stranger.submit("POST", "Call/", CALL)
    assert refused.value.status == 401 and "not-a-key" not in str(refused.value)


def test_a_missing_api_key_is_refused_before_any_call(monkeypatch):
    monkeypatch.delenv("ANSWERBACK_API_KEY", raising=False)
    with pytest.raises(ValueError, match="ANSWERBACK_API_KEY"):
        Client("http://127.0.0.1:1")


def test_settings_default_to_the_environment(monkeypatch, ab, web):
    monkeypatch.setenv("ANSWERBACK_URL", web.url)
    monkeypatch.setenv("ANSWERBACK_API_KEY", KEY_A)
    mine = ab.submit("POST", "Call/", CALL)
    with Client() as from_env:
        assert from_env.url == web.url and from_env.get(mine.request_id).request_id == mine.request_id


class Relay:
    """A TCP hop between the client and web that can lose one answer: after
    `lose_next_answer()`, the next connection's request reaches web (which stores the
    submission before it answers); once web's answer starts coming back the relay drops it,
    sets `lost`, and keeps the client waiting until `hang_up` is set, then closes the
    connection: web died in the middle of the call. A connection that web does not take
    (web down) is closed at once; `refused` counts those."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.losing, self.lost, self.hang_up = threading.Event(), threading.Event(), threading.Event()
        self.refused = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def lose_next_answer(self) -> None:
        self.losing.set()

    def close(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            self.refused += 1
            client.close()
            return
        losing = self.losing.is_set()
        self.losing.clear()
        threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
        if losing:
            upstream.recv(1)  # web has stored the submission and started answering
            self._hang_up(upstream)
            self.lost.set()
            self.hang_up.wait(60)
            self._hang_up(client)
        else:
            self._pipe(upstream, client)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        for end in (source, sink):
            Relay._hang_up(end)

    @staticmethod
    def _hang_up(end: socket.socket) -> None:
        """Shut down first: that wakes a thread blocked reading it, which a close alone does not."""
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        end.close()


def test_connection_errors_are_retried_then_raised_as_unavailable():
    nothing = Relay(free_port())  # takes connections and closes them: nothing behind it
    try:
        with Client(nothing.url, KEY_A, retries=3, backoff=0.01) as client, pytest.raises(Unavailable) as down:
            client.get(str(uuid.uuid4()))
        assert nothing.refused == 4 and down.value.status is None
    finally:
        nothing.close()
    with Client(f"http://127.0.0.1:{free_port()}", KEY_A, retries=0) as client, pytest.raises(Unavailable):
        client.submit("POST", "Call/", CALL)


def test_paging_over_more_than_20_requests_gives_each_exactly_once(ab, sandbox):
    outcomes = ab.submit_many([message(n) for n in range(45)], concurrency=8)
    submitted = {r.request_id for r in outcomes}
    assert len(submitted) == 45
    listed = [r.request_id for r in ab.requests()]
    assert len(listed) == 45 and set(listed) == submitted
    newest = [r.request_id for r in ab.requests(limit=25)]
    assert newest == listed[:25]
    unfinished = [
        (r.request_id, r.status, r.raw.get("api_id")) for r in ab.wait_many(outcomes, timeout=60) if not r.finished
    ]
    assert not unfinished, (unfinished, sandbox.stats()["callbacks"])
    assert {r.request_id for r in ab.requests(status="completed")} == submitted
    assert list(ab.requests(status="queued")) == []


def test_requests_submitted_while_paging_do_not_repeat_the_older_ones(ab):
    older = {r.request_id for r in ab.submit_many([message(n) for n in range(30)])}
    pages = ab.requests()
    first_page = [next(pages).request_id for _ in range(20)]
    newer = ab.submit_many([message(n) for n in range(30, 35)])  # push the older ones 5 places down
    rest = [r.request_id for r in pages]
    assert len(first_page + rest) == 30 and set(first_page + rest) == older
    assert not {r.request_id for r in newer} & set(rest)


def test_submit_many_answers_in_item_order_with_each_refusal(ab):
    items = [
        message(0),
        {"method": "POST", "path": "../x"},
        {**message(2), "idempotency_key": "bulk-2"},
        {"method": "GET", "path": "Call/", "params": {}},
    ]
    seen = []
    outcomes = ab.submit_many(items, concurrency=3, on_result=seen.append)
    assert isinstance(outcomes[1], InvalidRequest) and "path" in outcomes[1].fields
    assert [o.path for o in (outcomes[0], outcomes[2], outcomes[3])] == ["Message/", "Message/", "Call/"]
    assert outcomes[3].method == "GET" and len(seen) == 4
    assert ab.submit_many([items[2]])[0].request_id == outcomes[2].request_id  # the key made it a replay


def test_submit_many_with_a_refused_key_stops_and_reports_every_item(web):
    with Client(web.url, "not-a-key") as stranger:
        outcomes = stranger.submit_many([message(n) for n in range(20)], concurrency=2)
    assert all(isinstance(o, Unauthorized) for o in outcomes)


def test_async_client_has_the_same_methods(web, worker, sandbox):
    async def scenario() -> str:
        async with AsyncClient(web.url, KEY_A) as ab:
            req = await ab.submit("POST", "Call/", CALL, idempotency_key="async-1")
            assert isinstance(req, AsyncRequest) and req.status == "queued"
            done = await req.wait(timeout=30)
            assert done.status == "completed" and done.completed_at.tzinfo == UTC
            assert (await ab.get(req.request_id)).api_id == done.api_id
            assert (await ab.result(done.api_id, wait=2)).request_id == req.request_id
            assert (await ab.submit("POST", "Call/", CALL, idempotency_key="async-1")).replayed
            [delivery] = await ab.deliveries(req.request_id)
            assert delivery.api_id == done.api_id
            timeline = await ab.events(req.request_id)
            assert timeline.events[0].idempotency_key == "async-1" and timeline.events[-1].event == "completed"
            outcomes = await ab.submit_many([message(n) for n in range(24)] + [{"method": "PUT", "path": "Call/"}])
            assert isinstance(outcomes[-1], InvalidRequest) and len({o.request_id for o in outcomes[:-1]}) == 24
            finals = await ab.wait_many(outcomes[:-1], timeout=60)
            assert {f.status for f in finals} == {"completed"}
            listed = [r.request_id async for r in ab.requests()]
            assert len(listed) == 25 and set(listed) == {req.request_id} | {o.request_id for o in outcomes[:-1]}
            assert [r.request_id async for r in ab.requests(status="completed", limit=21)] == listed[:21]
            with pytest.raises(NotFound):
                await ab.get(str(uuid.uuid4()), wait=1)
        async with AsyncClient(web.url, "not-a-key") as stranger:
            with pytest.raises(Unauthorized):
                await stranger.get(req.request_id)
        return req.request_id

    assert len(sent_upstream(sandbox, asyncio.run(scenario()))) == 1


def test_a_failed_request_is_found_and_retried_one_by_one_or_in_bulk(ab, web, sandbox):
    sandbox.faults(status_4xx={"rate": 1.0, "error": "to is invalid"})
    failed = ab.submit("POST", "Message/", message(1)["params"], idempotency_key="order-1").wait(30)
    assert failed.status == "failed"
    sandbox.reset()
    again = ab.retry(failed.request_id)
    assert again.retry_of == failed.request_id and again.wait(30).status == "completed"
    with pytest.raises(Conflict) as refused:
        ab.retry(failed.request_id)
    assert refused.value.retried_as == again.request_id and refused.value.status == 409
    assert [r.request_id for r in ab.requests(q="order-1")] == [failed.request_id]
    assert [r.request_id for r in ab.requests(path="Message/", status="completed")] == [again.request_id]
    assert ab.get(failed.request_id).retried_as == again.request_id

    async def bulk() -> tuple[int, str | None]:
        async with AsyncClient(web.url, KEY_A) as aio:
            assert (await aio.retry_matching(path="Message/", preview=True)).count == 1
            started = await aio.retry_matching(status="failed", path="Message/")
            assert [r.request_id async for r in aio.requests(q=failed.request_id)] == [failed.request_id]
            return started.count, started.bulk_id

    count, bulk_id = asyncio.run(bulk())
    assert count == 1 and bulk_id
    done = wait_for(lambda: (p := ab.retry_progress(bulk_id)).status == "done" and p, 20, 0.05, "the bulk retry")
    assert (done.retried, done.skipped) == (0, 1)  # retried already: skipped
    assert done.finished_at is not None and done.finished_at.tzinfo == UTC


@pytest.mark.slow
def test_a_submission_retried_across_a_web_restart_is_sent_upstream_once(make_stack, sandbox):
    stack = make_stack()
    relay = Relay(int(stack.web.url.rsplit(":", 1)[1]))
    outcome: list[Request | BaseException] = []

    def submit() -> None:
        try:
            with Client(relay.url, KEY_A, timeout=60, retries=200, backoff=0.05, max_backoff=0.25) as client:
                outcome.append(client.submit("POST", "Call/", CALL))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    relay.lose_next_answer()
    caller = threading.Thread(target=submit)
    caller.start()
    try:
        assert relay.lost.wait(30), "the submission never reached web"
        stack.web.service.stop()
        relay.hang_up.set()  # only now does the client learn that its call failed
        wait_for(lambda: relay.refused >= 3, 30, message="the client to retry while web is down")
        stack.web.service.start()
        caller.join(60)
    finally:
        relay.close()
    [req] = outcome
    assert isinstance(req, Request), req
    assert req.replayed  # the retry was answered with the submission web had stored
    with Client(stack.web.url, KEY_A) as ab:
        wait_for(
            lambda: ab.get(req.request_id).status not in ("queued", "sending"), 30, message="the worker to send it"
        )
        assert [r.request_id for r in ab.requests()] == [req.request_id]
    assert len(sent_upstream(sandbox, req.request_id)) == 1


@pytest.mark.slow
def test_a_submission_retried_through_503s_while_redis_is_down_is_sent_once(base_env, workdir, sandbox):
    server = RedisServer(workdir / f"redis-client-{uuid.uuid4().hex[:6]}").start()
    stack = Stack(
        {
            **base_env,
            "REDIS_URL": server.url,
            "SWEEP_INTERVAL": "1",
            "LEASE_SECONDS": "3",
            "DRAINER_STALE_SECONDS": "2",
        },
        workdir,
        0,
    )
    try:
        stack.start_web()
        server.kill()
        outcome: list[Request | BaseException] = []

        def submit() -> None:
            try:
                with Client(stack.web.url, KEY_A, retries=200, backoff=0.05, max_backoff=0.5) as client:
                    outcome.append(client.submit("POST", "Call/", CALL))
            except BaseException as exc:
                outcome.append(exc)

        caller = threading.Thread(target=submit)
        caller.start()
        wait_for(
            lambda: "storage unavailable" in stack.web.service.log() or "Redis unavailable" in stack.web.service.log(),
            30,
            message="web to answer 503 while Redis is down",
        )
        server.start()
        stack.start_worker()  # a worker's own recovery from a Redis crash is test_redis_crash's subject
        caller.join(60)
        [req] = outcome
        assert isinstance(req, Request), req
        with Client(stack.web.url, KEY_A) as ab:
            assert ab.wait(req.request_id, 30).status == "completed"
            assert [r.request_id for r in ab.requests()] == [req.request_id]
        assert len(sent_upstream(sandbox, req.request_id)) == 1
    finally:
        stack.stop()
        server.stop()


@pytest.mark.slow
def test_a_capped_wait_is_asked_again_until_the_request_finishes(make_stack, sandbox):
    stack = make_stack(WEB_CONCURRENCY="1", MAX_WAITERS="1")  # one wait slot in all
    sandbox.faults(
        drop_callback={"rate": 1.0, "paths": ["Message"]}, callback_delay={"rate": 1.0, "seconds": 3, "paths": ["Call"]}
    )
    with Client(stack.web.url, KEY_A) as ab, ThreadPoolExecutor(1) as pool:
        item = message(0)
        hog = ab.submit(item["method"], item["path"], item["params"])
        holding = pool.submit(ab.get, hog.request_id, 8)  # takes the slot: its callback never comes
        wait_for(lambda: stack.redis.hget("ab:metrics", "waits_held") == "1", 10, message="the slot to be taken")
        done = ab.submit("POST", "Call/", CALL).wait(timeout=30)
        assert done.status == "completed"
        assert int(stack.redis.hget("ab:metrics", "waits_capped")) >= 2
        assert holding.result(timeout=30).status == "pending"


def test_backoff_grows_with_full_jitter_and_honours_retry_after():
    backoff = Backoff(retries=6, base=0.5, cap=4.0)
    assert all(0 <= backoff.delay(n) <= min(4.0, 0.5 * 2**n) for n in range(8) for _ in range(50))
    assert max(backoff.delay(5) for _ in range(200)) > 2.0  # it does grow past the first steps
    assert backoff.delay(0, retry_after=7.0) == 7.0 and backoff.delay(0, retry_after=3600) == 60.0
    in_two_minutes = format_datetime(datetime.now(UTC) + timedelta(minutes=2), usegmt=True)
    assert 100 < retry_after(httpx.Response(503, headers={"Retry-After": in_two_minutes})) <= 120
    assert retry_after(httpx.Response(503, headers={"Retry-After": "2"})) == 2.0
    assert retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    assert retry_after(httpx.Response(503)) is None
