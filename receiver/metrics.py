"""GET /metrics: Prometheus text, from the counters all processes keep in Redis."""
from __future__ import annotations

from typing import Iterator

from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from receiver.services import services
from store.metrics import snapshot

bp = Blueprint("metrics", __name__)

COUNTERS = {  # prefix in Redis -> (metric, help, label)
    "callbacks_": ("answerback_callbacks", "Callback deliveries stored, by outcome.", "outcome"),
    "rejected_": ("answerback_callbacks_rejected", "Callback deliveries refused, by reason.", "reason"),
    "sends_": ("answerback_sends", "Upstream send attempts, by verdict.", "verdict"),
    "finished_": ("answerback_requests_finished", "Requests that reached a final status.", "status"),
    "waits_": ("answerback_waits", "Waiting reads, by how they were served.", "kind"),
    "notify_": ("answerback_notification_attempts", "Notification attempts, by outcome.", "outcome"),
}


class RedisCollector:
    def collect(self) -> Iterator[Metric]:
        counters, gauges = snapshot(services().redis)
        yield _counter("answerback_requests_submitted", "Requests submitted.", counters.get("submitted", 0))
        for prefix, (name, help_text, label) in COUNTERS.items():
            family = CounterMetricFamily(name, help_text, labels=[label])
            for key, value in sorted(counters.items()):
                if key.startswith(prefix):
                    family.add_metric([key[len(prefix):]], value)
            yield family
        for name, value in gauges.items():
            yield GaugeMetricFamily(f"answerback_{name}", f"Requests now: {name.replace('_', ' ')}.", value=value)


def _counter(name: str, help_text: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


@bp.get("/metrics")
def metrics():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector())
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")
