"""The whole system on a Redis Cluster (3 primaries, 3 replicas; REDIS_CLUSTER_NODES with
STORE_PARTITIONS=24, RQ on a plain Redis): requests complete, spread over every primary, page
exactly once each, are found by api_id and waited for; and a primary SIGKILLed under a stream of
signed callbacks and submissions loses no acknowledged callback, answers none 503, sends no POST
twice, while the other shards carry on."""

from __future__ import annotations

import threading
import time
from collections import Counter
from itertools import pairwise

import httpx
import pytest

from config import Settings
from local.processes import wait_for
from receiver.quarantine import recheck
from receiver.services import Services
from store import connect, keys
from store.partitions import Partitions
from tests.support.api import submit, wait_status, wait_worker
from tests.support.notify_receiver import NEW_SECRET, Receiver
from tests.support.services import Stack
from tests.support.signed_callbacks import CallbackStream, delivery, not_kept_once, pending_records

pytestmark = pytest.mark.slow

DB = 11  # RQ's database on the session's plain Redis (tests/README.md)
ADMIN = "admin-key-on-the-cluster"
WRONG_URL = "https://answerback.example"  # a PUBLIC_URL other than the one the workers hand out
PARTS = Partitions(24)


@pytest.fixture
def cluster_stack(make_cluster_stack):
    return make_cluster_stack()


@pytest.fixture
def make_cluster_stack(redis_cluster, redis_server, base_env, workdir, sandbox):
    stacks: list[Stack] = []

    def make(**overrides: str) -> Stack:
        connect(f"{redis_server.url}/{DB}").flushdb()
        stack = Stack(_env(base_env, redis_cluster, redis_server, overrides), workdir, DB)
        stacks.append(stack)
        stack.start_web()
        stack.start_worker()
        stack.start_worker()
        return stack

    yield make
    for stack in stacks:
        stack.stop()


def _env(base_env, redis_cluster, redis_server, overrides: dict[str, str]) -> dict[str, str]:
    return {
        **base_env,
        "REDIS_URL": f"{redis_server.url}/{DB}",
        "REDIS_CLUSTER_NODES": redis_cluster.seeds,
        "STORE_PARTITIONS": str(PARTS.count),
        "REDIS_MIN_REPLICAS": "1",
        "SWEEP_INTERVAL": "1",
        "LEASE_SECONDS": "10",
        "DRAINER_STALE_SECONDS": "3",
        **overrides,
    }


def shard_of(cluster, rid: str) -> int:
    return cluster.primary_of(keys.at(PARTS.at(rid), keys.request(rid))).port


def test_requests_complete_spread_over_every_primary_page_once_and_are_found(cluster_stack, redis_cluster, sandbox):
    n = 240
    with cluster_stack.web.client() as api:
        wait_worker(api)
        rids = [submit(api)["request_id"] for _ in range(n)]

        def completed() -> int:
            page = api.get("/v1/requests", params={"status": "completed", "limit": 1}).json()
            return int(page["meta"]["total_count"])

        wait_for(lambda: completed() == n, 90, 0.25, f"{n} requests to complete")
        spread = Counter(shard_of(redis_cluster, rid) for rid in rids)
        assert len(spread) == 3, spread  # every primary holds requests

        seen, records = [], []
        for offset in range(0, n + 20, 20):
            page = api.get("/v1/requests", params={"limit": 20, "offset": offset}).json()
            assert page["meta"]["total_count"] == n
            records += page["objects"]
        seen = [r["request_id"] for r in records]
        assert len(seen) == n and set(seen) == set(rids), "each request once over the pages"
        assert all(a["submitted_at"] >= b["submitted_at"] for a, b in pairwise(records)), "newest first"

        for record in records[:: n // 12]:
            found = api.get(f"/v1/results/{record['api_id']}")
            assert found.status_code == 200 and found.json()["request_id"] == record["request_id"]

        rid = submit(api, "POST", "Call/", {"to": "1"})["request_id"]
        waited = api.get(f"/v1/requests/{rid}", params={"wait": 20}).json()
        assert waited["status"] == "completed"
    sent = sandbox.stats()["by_rid"]
    assert [r for r in rids if sent.get(r) != 1] == [], "each POST sent once"


def test_a_primary_killed_under_callbacks_and_submissions_loses_nothing(cluster_stack, redis_cluster, sandbox):
    sandbox.faults(drop_callback=1.0)  # this test is the upstream's callback sender
    with cluster_stack.web.client() as api:
        wait_worker(api)
        records = pending_records(api, 90)
        stream = CallbackStream(cluster_stack.web.url, records, senders=4, pace_s=0.1)
        submitted: list[tuple[int, str, float]] = []
        stop = threading.Event()

        def submissions() -> None:
            while not stop.is_set():
                params = {"src": "1", "dst": "2", "text": "y"}
                answer = api.post("/v1/requests", json={"method": "POST", "path": "Message/", "params": params})
                assert answer.status_code in (202, 503), answer.text
                submitted.append((answer.status_code, answer.json().get("request_id", ""), time.monotonic()))
                time.sleep(0.05)

        submitter, streamer = threading.Thread(target=submissions), threading.Thread(target=stream.run)
        submitter.start()
        streamer.start()
        try:
            wait_for(lambda: len(stream.answers) >= 15, 30, message="the stream under way")
            key = keys.at(PARTS.at(records[-1]["request_id"]), "x")
            victim = redis_cluster.primary_of(key)
            killed_at = time.monotonic()
            redis_cluster.kill(victim)

            def taken_over() -> bool:
                try:
                    return redis_cluster.primary_of(key) is not victim
                except LookupError:  # nobody serves the slot until the replica is promoted
                    return False

            wait_for(taken_over, 30, 0.05, "a replica to take over")
            failover_s = time.monotonic() - killed_at
            redis_cluster.restart(victim)  # back as the new primary's replica: WAIT 1 holds again
            streamer.join(180)
        finally:
            stop.set()
            submitter.join(30)
        statuses = stream.statuses()
        acknowledged = [r for r in records if stream.answers[r["request_id"]][0] == 200]
        wait_for(lambda: not not_kept_once(api, acknowledged)[0], 60, 0.5, "spooled callbacks to be applied")
        lost, twice_applied = not_kept_once(api, acknowledged)
        accepted = [rid for status, rid, _ in submitted if status == 202]
        during = [rid for status, rid, at in submitted if status == 202 and killed_at <= at <= killed_at + failover_s]
        missing = [rid for rid in accepted if api.get(f"/v1/requests/{rid}").status_code != 200]
        for rid in accepted:
            wait_status(api, rid, "pending", timeout=60)  # sent, on whichever shard it lives
    sent = sandbox.stats()["by_rid"]
    twice = [rid for rid in [r["request_id"] for r in records] + accepted if sent.get(rid, 0) > 1]
    print(
        f"\ncluster failover: replica took over in {failover_s:.2f} s; callbacks sent {len(records)}, "
        f"acknowledged {len(acknowledged)}, lost {len(lost)}, applied twice {len(twice_applied)}, "
        f"503s {statuses.count(503)}, longest held {stream.longest_hold():.2f} s; submissions {len(submitted)}, "
        f"accepted {len(accepted)} ({len(during)} during the failover); POSTs sent twice {len(twice)}"
    )
    assert statuses == [200] * len(records)
    assert lost == [] and twice_applied == [] and twice == [] and missing == []
    assert during, "the other shards take submissions while one fails over"


def test_every_feature_works_on_a_cluster(make_cluster_stack, sandbox):
    """What spans partitions, on a real cluster, where a script or command touching two slots
    fails: retries one by one and in bulk, notifications, search, the timeline, figures, the
    quarantine and its re-check, status and metrics."""
    receiver = Receiver().start()
    stack = make_cluster_stack(NOTIFY_HOSTS="127.0.0.1", WEBHOOK_SECRET=NEW_SECRET, ADMIN_API_KEYS=ADMIN)
    sandbox.faults(drop_callback={"rate": 1.0, "paths": ["Message/"]})
    try:
        with stack.web.client() as api, stack.web.client(ADMIN) as admin:
            wait_worker(api)
            old = [
                submit(api, "POST", "Message/", {"to": str(i)}, callback_timeout=1, notify_url=receiver.url)
                for i in range(6)
            ]
            old = [wait_status(api, r["request_id"], "expired", timeout=30) for r in old]
            held = wait_status(api, submit(api, "POST", "Message/")["request_id"], "pending")
            sandbox.reset()
            key = {"Idempotency-Key": "tour-1"}
            first = api.post("/v1/requests", json={"method": "POST", "path": "Call/", "params": {}}, headers=key)
            again = api.post("/v1/requests", json={"method": "POST", "path": "Call/", "params": {}}, headers=key)
            assert again.headers.get("Idempotent-Replayed") == "true"
            assert again.json()["request_id"] == first.json()["request_id"]
            done = wait_status(api, first.json()["request_id"], "completed")

            one = api.post(f"/v1/requests/{old[0]['request_id']}/retry")
            assert one.status_code == 202, one.text
            assert PARTS.of(one.json()["request_id"]) == PARTS.of(old[0]["request_id"])
            preview = api.post("/v1/requests/retry", json={"status": "expired", "preview": True}).json()
            assert preview["count"] == 6
            bulk = api.post("/v1/requests/retry", json={"status": "expired"}).json()

            def finished() -> dict | None:
                progress = api.get(f"/v1/requests/retry/{bulk['bulk_id']}").json()
                return progress if progress["status"] == "done" else None

            progress = wait_for(finished, 30, 0.1, "the bulk retry to finish")
            assert (progress["count"], progress["retried"], progress["skipped"]) == (6, 5, 1)
            retried = [api.get(f"/v1/requests/{r['request_id']}").json()["retried_as"] for r in old]
            for rid in retried:
                wait_status(api, rid, "completed", timeout=30)
            wait_for(lambda: all(receiver.events(r["request_id"]) for r in old), 20, 0.1, "every notification")

            for q in (done["request_id"], done["api_id"], "tour-1"):
                found = api.get("/v1/requests", params={"q": q}).json()
                assert [r["request_id"] for r in found["objects"]] == [done["request_id"]], q
            events = api.get(f"/v1/requests/{old[1]['request_id']}/events").json()["events"]
            assert events[0]["event"] == "submitted" and events[-1]["event"] == "retried"
            summary = api.get("/v1/summary").json()
            assert sum(summary["counts"].values()) == 6 + 6 + 1 + 1, summary
            series = api.get("/v1/series", params={"window": "hour"})
            assert series.status_code == 200
            assert admin.get("/v1/summary", params={"scope": "all"}).status_code == 200

            with httpx.Client(base_url=stack.web.url) as hooks:
                refused = delivery(hooks, WRONG_URL, held)
            assert refused is not None and refused.status_code == 403
            assert admin.get("/v1/quarantine").json()["meta"]["total_count"] == 1
            web = Services.build(Settings.from_env({**stack.env, "PUBLIC_URL": WRONG_URL}))
            assert recheck(web)["outcomes"] == {"matched": 1}
            assert wait_status(api, held["request_id"], "completed")

            status = api.get("/v1/status")
            assert status.status_code == 200, status.text
            metrics = api.get("/metrics").text
            assert "answerback_requests_submitted_total" in metrics
    finally:
        receiver.stop()
