"""Soak: N requests through the sandbox with every fault switched on at once.

Small in CI; larger by a flag: `SOAK_N=2000 python3 manage.py test tests/test_soak.py -s`.
It prints totals by outcome and the two numbers that must be zero: acknowledged
callback deliveries lost, and POSTs the upstream acted on twice.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from local.processes import wait_for
from tests.support.api import submit

pytestmark = pytest.mark.slow

SOAK_N = int(os.environ.get("SOAK_N", "300"))
FAULTS = {
    "callback_delay": {"rate": 0.3, "seconds": [0.05, 2.0]},
    "early_callback": 0.1,
    "duplicate_callback": 0.1,
    "drop_callback": 0.05,
    "status_429": {"rate": 0.03, "retry_after": 1},
    "status_5xx": {"rate": 0.05, "status": [500, 503]},
    "slow_answer": {"rate": 0.02, "seconds": 1.5},
    "reset_after_receive": 0.02,
}


def a_request(i: int) -> tuple[str, str, dict]:
    kind = random.Random(i).random()
    if kind < 0.7:
        return "POST", "Message/", {"src": "14155550100", "dst": str(14155550000 + i), "text": f"soak {i}"}
    if kind < 0.85:
        return (
            "POST",
            "Call/",
            {"from": "14155550100", "to": str(14155550000 + i), "answer_url": "https://example.com/a"},
        )
    return "GET", "Call/", {"limit": 1 + i % 20}


def all_records(api) -> list[dict]:
    records, url = [], "/v1/requests?limit=20&offset=0"
    while url:
        page = api.get(url).json()
        records += page["objects"]
        url = page["meta"]["next"]
    return records


def test_soak_with_every_fault_on(make_stack, sandbox):
    stack = make_stack(db=5, workers=2, PLIVO_TIMEOUT="1", CALLBACK_TIMEOUT="8", MAX_ATTEMPTS="8")
    sandbox.faults(**FAULTS)
    started = time.monotonic()
    with stack.web.client() as api, ThreadPoolExecutor(8) as pool:
        submitted = list(pool.map(lambda i: submit(api, *a_request(i)), range(SOAK_N)))
        methods = {r["request_id"]: r["method"] for r in submitted}

        def finished() -> bool:
            counters = stack.redis.hgetall("ab:metrics")
            return sum(int(v) for k, v in counters.items() if k.startswith("finished_")) >= SOAK_N

        wait_for(finished, timeout=60 + SOAK_N * 0.1, interval=0.5, message="every request to finish")
        wait_for(lambda: sandbox.stats()["callbacks"]["pending"] == 0, 30, message="the last callbacks")
        elapsed = time.monotonic() - started
        records = {r["request_id"]: r for r in all_records(api)}
        stats = sandbox.stats()
        acknowledged = [
            d
            for d in sandbox.http.get("/_sandbox/callbacks", params={"limit": 100000}).json()["callbacks"]
            if d["status"] == 200 and d["rid"] in records
        ]
        kept = {
            rid: {d["api_id"] for d in api.get(f"/v1/requests/{rid}/deliveries").json()["objects"]}
            for rid in {d["rid"] for d in acknowledged}
        }
    lost = [d for d in acknowledged if d["api_id"] not in kept[d["rid"]]]
    double_sent = [rid for rid, n in stats["acted_by_rid"].items() if methods.get(rid) == "POST" and n > 1]
    outcomes = Counter(r["status"] + ("/late" if r["late"] else "") for r in records.values())
    attempts = Counter(r["attempts"] for r in records.values())
    print(
        f"\nsoak: N={SOAK_N} in {elapsed:.1f} s; outcomes {dict(outcomes)}; attempts {dict(sorted(attempts.items()))}"
    )
    print(
        f"soak: upstream answers {stats['requests']['by_status']}; callbacks {stats['callbacks']['by_status']}, "
        f"dropped {stats['callbacks']['dropped']}; acknowledged deliveries {len(acknowledged)}"
    )
    print(
        f"soak: LOST acknowledged deliveries = {len(lost)}; POSTs SENT TWICE = {len(double_sent)}; "
        f"longest rate-limit wait = {stack.redis.hget('ab:metrics', 'ratelimit_wait_max_ms') or 0} ms"
    )
    assert len(records) == SOAK_N
    assert set(outcomes) <= {"completed", "completed/late", "failed", "expired"}
    assert lost == [] and double_sent == []
