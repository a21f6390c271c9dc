"""The system's health where operators look (/metrics, GET /v1/status), on real processes:
a missing worker, a dead drain job, a Redis that is not durable, two webs given different
settings, the sweep's age."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from config import Settings
from local import stack as local_stack
from local.processes import wait_for
from local.redis_server import free_port
from receiver.spool import DEAD_LETTERS
from store import keys
from store.health import Health, fingerprint, setting_digests
from tests.support.api import submit
from tests.support.memory import track
from tests.support.services import AUTH_TOKEN, KEY_A, start_web

DB_ALONE, DB_TWO_WEBS = 4, 14


def metrics(web) -> dict[str, float]:
    with web.client(key=None) as client:
        text = client.get("/metrics").text
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def status(web) -> dict[str, Any]:
    with web.client() as client:
        answer = client.get("/v1/status")
    assert answer.status_code == 200, answer.text
    return answer.json()


def codes(found: dict[str, Any]) -> list[str]:
    return [problem["code"] for problem in found["problems"]]


def test_without_a_worker_none_is_alive_and_a_worker_started_is_seen(make_stack):
    """No worker on the database: 0 alive, no_worker, and the drain job web rang counts as a
    drainer only until it goes stale (nothing runs it). A worker started: 1 alive, the sweep
    runs, and a web and a worker given the same settings agree."""
    stack = make_stack(db=DB_ALONE, workers=0, WEB_CONCURRENCY="1")
    with stack.web.client(key=None) as anon:
        assert anon.get("/v1/status").status_code == 401
    with stack.web.client() as api:
        submit(api)  # web rings a drain job no worker will run
    found = status(stack.web)
    assert found["workers_alive"] == 0 and "no_worker" in codes(found), found
    assert found["sweep_age_seconds"] is None and "sweep_late" in codes(found)
    assert metrics(stack.web)["answerback_workers_alive"] == 0
    wait_for(lambda: metrics(stack.web)["answerback_drainers"] == 0, 10, 0.2, "the dead drain job to stop counting")
    with stack.web.client() as anon:
        assert anon.get("/readyz").status_code == 200  # web itself can take callbacks

    stack.start_worker()
    wait_for(lambda: metrics(stack.web)["answerback_workers_alive"] == 1, 15, 0.2, "the worker's heartbeat")
    found = wait_for(lambda: (s := status(stack.web))["sweep_age_seconds"] is not None and s, 15, 0.2, "a sweep to run")
    assert found["workers_alive"] == 1 and found["sweep_age_seconds"] < 5, found
    assert codes(found) == [], found
    assert found["settings"]["distinct"] == 1
    kinds = sorted(p["kind"] for p in found["settings"]["fingerprints"][0]["processes"])
    assert kinds == ["web", "worker"], found
    figures = metrics(stack.web)
    assert figures["answerback_sweep_age_seconds"] < 5 and figures["answerback_settings_fingerprints"] == 1
    assert abs(figures["answerback_clock_offset_seconds"]) < 1 and figures["answerback_redis_durable"] == 1


def test_two_webs_given_different_settings_are_noticed(make_stack, workdir):
    stack = make_stack(db=DB_TWO_WEBS, workers=0, WEB_CONCURRENCY="1")
    other = start_web(stack.env, workdir, "web-db14-other", PUBLIC_URL=stack.web.url, MAX_CALLBACK_TIMEOUT="600")
    try:
        wait_for(lambda: metrics(stack.web)["answerback_settings_fingerprints"] == 2, 15, 0.2, "both webs' heartbeats")
        found = status(stack.web)
        assert found["settings"]["distinct"] == 2 and found["settings"]["differing"] == ["MAX_CALLBACK_TIMEOUT"]
        assert "settings_disagree" in codes(found), found
        message = next(p["message"] for p in found["problems"] if p["code"] == "settings_disagree")
        assert "MAX_CALLBACK_TIMEOUT" in message
    finally:
        other.service.stop()


def test_a_redis_that_is_not_durable_is_warned_about_and_reported(make_stack, redis):
    """The session's Redis is shared: its settings are put back whatever happens."""
    policy = redis.config_get("maxmemory-policy")["maxmemory-policy"]
    redis.config_set("appendonly", "no")
    redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        stack = make_stack(db=DB_ALONE, workers=0, WEB_CONCURRENCY="1")
        wait_for(lambda: "Redis is not durable" in stack.web.service.log(), 10, 0.1, "the warning")
        (line,) = [line for line in stack.web.service.log().splitlines() if "Redis is not durable" in line]
        assert "WARNING" in line and "appendonly=no" in line and "maxmemory-policy=allkeys-lru" in line
        assert metrics(stack.web)["answerback_redis_durable"] == 0
        found = status(stack.web)
        assert found["redis"] == {"durable": False, "appendonly": "no", "maxmemory_policy": "allkeys-lru"}
        assert "redis_not_durable" in codes(found)
    finally:
        redis.config_set("maxmemory-policy", policy)
        redis.config_set("appendonly", "yes")


def test_a_process_whose_clock_is_off_is_named_and_no_secret_is_published(web, redis):
    """A heartbeat as a worker on a machine 15 s ahead would publish it (Health.beat, the real
    write) on the session's database: clock_offset names it. What any process publishes holds
    digests of its settings, never a secret's value."""
    health = Health(redis)
    now, _, _ = health.clock()
    digests = setting_digests(Settings.from_env({"PLIVO_AUTH_TOKEN": AUTH_TOKEN, "API_KEYS": KEY_A}))
    beat = {"kind": "worker", "host": "skewed", "pid": 7, "queue": "answerback", "settings": digests}
    health.beat("worker:skewed:7:test", {**beat, "fingerprint": fingerprint(digests), "offset_s": 15.0}, now)
    found = status(web)
    assert found["clock"]["max_offset_seconds"] == 15.0
    message = next(p["message"] for p in found["problems"] if p["code"] == "clock_offset")
    assert "worker on skewed (+15.0 s)" in message
    published = json.dumps(redis.hgetall(keys.PROCESS_BEATS)) + json.dumps(found)
    assert AUTH_TOKEN not in published and KEY_A not in published


def test_an_app_other_than_web_boots_under_web_s_gunicorn_conf(base_env, workdir):
    """gunicorn.conf.py starts web's heartbeat once a worker boots; another app served under
    it (the benches' no-op baseline, bench/noop_app.py) has none to start and boots all the same."""
    port = free_port()
    env = local_stack.web_env(base_env, port)
    noop = track(local_stack.start_web(env, workdir, "noop", app="bench.noop_app:create_app()"))  # waits for /healthz
    try:
        assert httpx.post(local_stack.local_url(port) + "/callbacks/plivo", timeout=10).json() == {"outcome": "noop"}
    finally:
        noop.stop()


def test_a_spooled_callback_that_cannot_be_applied_is_reported_until_emptied(make_stack, tmp_path):
    """A web starts on a spool holding an entry it cannot apply (a line that is not JSON): the
    replay keeps it in the dead letters, and /v1/status names that spool (once, though both of
    web's processes share it) until a person empties it; whichever process answers."""
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / f"{uuid.uuid4()}.spool").write_text("not a spool entry\n")
    stack = make_stack(db=DB_ALONE, workers=0, WEB_CONCURRENCY="2", SPOOL_DIR=str(spool))
    wait_for(lambda: stack.redis.zcard(keys.PROCESSES) == 2, 15, 0.2, "both processes' beats")
    wait_for(lambda: "spool_dead_letters" in codes(status(stack.web)), 15, 0.2, "the dead letter reported")
    for _ in range(4):  # either process answers: both name the spool once
        (problem,) = [p for p in status(stack.web)["problems"] if p["code"] == "spool_dead_letters"]
        assert f"1 in {spool} on " in problem["message"] and problem["message"].count(" on ") == 1
    assert "not a spool entry" in (spool / DEAD_LETTERS).read_text()
    (spool / DEAD_LETTERS).write_text("")  # looked at and emptied
    wait_for(lambda: "spool_dead_letters" not in codes(status(stack.web)), 15, 0.2, "the problem cleared")
