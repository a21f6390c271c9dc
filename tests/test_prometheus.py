"""/metrics latency histograms on the real stack: each one's labels and counts equal what
happened, its buckets are cumulative, and two web services' observations add up in Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from local.processes import wait_for
from tests.support.api import submit, wait_status
from tests.support.services import start_web
from tests.support.signed_callbacks import post_callback as post_signed_callback
from tests.support.signed_callbacks import signed_headers

REQUESTS = 4


def histograms(web) -> dict[str, dict[str, dict[str, object]]]:
    """metric -> label value -> {"buckets": [(le, n)...], "count": n, "sum": s}."""
    with web.client(key=None) as client:
        text = client.get("/metrics").text
    found: dict[str, dict[str, dict[str, object]]] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        series = found.setdefault(family.name, {})
        for sample in family.samples:
            labels = dict(sample.labels)
            le = labels.pop("le", None)
            (value,) = labels.values()
            entry = series.setdefault(value, {"buckets": []})
            if sample.name.endswith("_bucket"):
                entry["buckets"].append((le, sample.value))
            else:
                entry[sample.name.rsplit("_", 1)[1]] = sample.value
    return found


def counts(web, metric: str) -> dict[str, float]:
    return {value: entry["count"] for value, entry in histograms(web).get(metric, {}).items()}


def post_callback(web, body: dict, nonce: str | None = None, signed: bool = True):
    headers = {"Content-Type": "application/json"}
    if signed:
        headers |= signed_headers("POST", web.url + "/callbacks/plivo", body, nonce=nonce)
    with web.client(key=None) as client:
        return client.post("/callbacks/plivo", content=json.dumps(body), headers=headers)


def test_histograms_count_every_callback_send_and_completion_across_web_services(make_stack, workdir):
    stack = make_stack(db=10)
    other = start_web(stack.env, workdir, "web-db10-other")  # a second machine: its own two processes
    try:
        with stack.web.client() as api:
            rids = [submit(api)["request_id"] for _ in range(REQUESTS)]
            for rid in rids:
                wait_status(api, rid, "completed")
        early = {"api_id": str(uuid.uuid4()), "status": "ok"}
        nonce = uuid.uuid4().hex
        assert post_callback(other, early, nonce).json() == {"outcome": "early"}
        assert post_callback(stack.web, early, nonce).json() == {"outcome": "duplicate"}  # a replay
        assert post_callback(other, {"api_id": str(uuid.uuid4())}, signed=False).status_code == 403
        assert post_callback(stack.web, {"status": "no api_id"}).status_code == 400
        assert post_callback(other, {"status": "no api_id"}).status_code == 400

        expected = {
            "answerback_webhook_duration_seconds": {
                "matched": REQUESTS,
                "early": 1,
                "duplicate": 1,
                "rejected": 1,
                "invalid": 2,
            },
            "answerback_request_duration_seconds": {"completed": REQUESTS},
            "answerback_upstream_duration_seconds": {"accepted": REQUESTS},
        }
        for metric, wanted in expected.items():
            wait_for(
                lambda metric=metric, wanted=wanted: counts(stack.web, metric) == wanted,
                15,
                message=f"{metric} to count {wanted} (it counts {counts(stack.web, metric)})",
            )
        seen = histograms(other)  # any web answers the same totals: they live in Redis
        for metric, series in seen.items():
            assert {value: entry["count"] for value, entry in series.items()} == expected[metric]
            for value, entry in series.items():
                les = [le for le, _ in entry["buckets"]]
                cumulative = [n for _, n in entry["buckets"]]
                assert les[-1] == "+Inf" and [float(le) for le in les] == sorted(float(le) for le in les)
                assert cumulative == sorted(cumulative), f"{metric}{{{value}}} buckets are not cumulative"
                assert entry["count"] == cumulative[-1]
                assert entry["sum"] > 0
        request = seen["answerback_request_duration_seconds"]["completed"]
        assert request["sum"] < REQUESTS * 60  # sandbox callbacks come within a second or so
    finally:
        other.service.stop()


def test_every_metric_is_in_the_api_docs_and_the_grafana_dashboard(web):
    with web.client(key=None) as client:
        names = {family.name for family in text_string_to_metric_families(client.get("/metrics").text)}
    root = Path(__file__).resolve().parent.parent
    readme = (root / "docs" / "api.md").read_text()
    dashboard = (root / "ops" / "grafana-dashboard.json").read_text()
    exposed = {f"{name}_total" if f"{name}_total" in readme else name for name in names}
    assert len(names) >= 18
    assert [name for name in sorted(exposed) if f"| `{name}` |" not in readme] == []
    assert [name for name in sorted(names) if name not in dashboard] == []


def test_a_fresh_web_takes_a_burst_of_first_callbacks_without_hanging(make_stack):
    """The first latency observation of a gevent worker builds its recorder under a lock that
    gunicorn's master created before the worker patched threading; a recorder that yielded
    to the hub under it hung the whole worker when a second callback came at that moment."""
    stack = make_stack(db=11, workers=0)

    async def burst() -> list[str]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=stack.web.url, timeout=20, limits=limits) as webhook:
            return await asyncio.gather(*(post_signed_callback(webhook, stack.web.url, None) for _ in range(64)))

    assert asyncio.run(burst()) == ["early"] * 64
