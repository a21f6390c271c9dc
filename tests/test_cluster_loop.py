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

import pytest

from local.processes import wait_for
from store import connect, keys
from store.partitions import Partitions
from tests.support.api import submit, wait_status, wait_worker
from tests.support.services import Stack
from tests.support.signed_callbacks import CallbackStream, not_kept_once, pending_records

pytestmark = pytest.mark.slow

DB = 11  # RQ's database on the session's plain Redis (tests/README.md)
PARTS = Partitions(24)


@pytest.fixture
def cluster_stack(redis_cluster, redis_server, base_env, workdir, sandbox):
    connect(f"{redis_server.url}/{DB}").flushdb()
    env = {
        **base_env,
        "REDIS_URL": f"{redis_server.url}/{DB}",
        "REDIS_CLUSTER_NODES": redis_cluster.seeds,
        "STORE_PARTITIONS": str(PARTS.count),
        "REDIS_MIN_REPLICAS": "1",
        "SWEEP_INTERVAL": "1",
        "LEASE_SECONDS": "10",
        "DRAINER_STALE_SECONDS": "3",
    }
    stack = Stack(env, workdir, DB)
    try:
        stack.start_web()
        stack.start_worker()
        stack.start_worker()
        yield stack
    finally:
        stack.stop()


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
