"""GET /metrics: Prometheus text, from the counters and histograms all processes keep in Redis;
and the timing of the webhook, which feeds answerback_webhook_duration_seconds."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import wraps
from time import perf_counter
from typing import Concatenate, ParamSpec

from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from receiver.errors import ApiError, InvalidSignature
from receiver.services import Services, services
from store.drain_jobs import live_drainers
from store.health import Health, HealthReport, this_process
from store.metrics import HISTOGRAM_BUCKETS, Histogram, observe, snapshot

bp = Blueprint("metrics", __name__)

COUNTERS = {  # prefix in Redis -> (metric, help, label)
    "callbacks_": ("answerback_callbacks", "Callback deliveries stored, by outcome.", "outcome"),
    "rejected_": ("answerback_callbacks_rejected", "Callback deliveries refused, by reason.", "reason"),
    "sends_": ("answerback_sends", "Upstream send attempts, by verdict.", "verdict"),
    "finished_": ("answerback_requests_finished", "Requests that reached a final status.", "status"),
    "waits_": ("answerback_waits", "Waiting reads, by how they were served.", "kind"),
    "notify_": ("answerback_notification_attempts", "Notification attempts, by outcome.", "outcome"),
    "spool_replays_": ("answerback_spool_replays", "Spooled callbacks replayed into Redis, by outcome.", "outcome"),
    "quarantine_applied_": (
        "answerback_quarantine_applied",
        "Quarantined callbacks that verified on a re-check and were applied, by outcome.",
        "outcome",
    ),
    "quarantine_dropped_": ("answerback_quarantine_dropped", "Quarantined callbacks dropped, by reason.", "reason"),
    "quarantine_full_": (
        "answerback_quarantine_dropped_full",
        "Quarantined callbacks dropped past QUARANTINE_MAX_BYTES, by whether their rid named a request.",
        "rid",
    ),
}

HISTOGRAMS = {  # name in store/metrics.py -> (metric, help, label)
    "webhook": (
        "answerback_webhook_duration_seconds",
        "Callback deliveries, receipt to answer, by outcome (or refusal: rejected, invalid, error).",
        "outcome",
    ),
    "request": ("answerback_request_duration_seconds", "Requests, submitted to final status, by status.", "status"),
    "upstream": ("answerback_upstream_duration_seconds", "Upstream send attempts, one each, by verdict.", "verdict"),
}

P = ParamSpec("P")


RID_ENVIRON = "answerback.rid"  # where the webhook leaves the request id its callback URL named
TENANT_ENVIRON = "answerback.tenant"  # and that request's tenant, once match_callback answered it


def timed_webhook(receive: Callable[Concatenate[Services, P], str]) -> Callable[Concatenate[Services, P], str]:
    """Observe the webhook's time from receipt to answer under the outcome `receive` answers
    (it takes the web's Services first), or under its refusal: rejected (bad signature),
    invalid (any other 4xx) or error. In memory: no Redis call on the hot path (store/metrics.py flushes).
    It goes into the figures over time too, under the tenant the webhook left in the request's
    environ (TENANT_ENVIRON) once its delivery was matched, else under the tenant of the request
    id it left there (RID_ENVIRON), which the flush looks up."""

    @wraps(receive)
    def timed(svc: Services, *args: P.args, **kwargs: P.kwargs) -> str:
        start = perf_counter()
        outcome = "error"
        try:
            outcome = receive(svc, *args, **kwargs)
            return outcome
        except InvalidSignature:
            outcome = "rejected"
            raise
        except (ApiError, HTTPException) as exc:
            status = exc.status if isinstance(exc, ApiError) else (exc.code or 500)
            outcome = "invalid" if status < 500 else "error"
            raise
        finally:
            request = args[0] if args else None
            environ = getattr(request, "environ", {})
            rid, tenant = environ.get(RID_ENVIRON, ""), environ.get(TENANT_ENVIRON)
            observe(svc.redis, "webhook", outcome, perf_counter() - start, rid, tenant, svc.partitions)

    return timed  # type: ignore[return-value]  # functools.wraps' _Wrapped is the same callable


class RedisCollector:
    def collect(self) -> Iterator[Metric]:
        spool = services().spool
        if spool is not None:
            yield GaugeMetricFamily(
                "answerback_spool_entries",
                "Callbacks in this machine's SPOOL_DIR waiting for Redis.",
                value=spool.entries(),
            )
            yield GaugeMetricFamily(
                "answerback_spool_dead_letters",
                "Spooled callbacks whose replay failed for another reason than an outage, "
                "kept in SPOOL_DIR's dead-letters file.",
                value=spool.dead_letters(),
            )
        try:
            counters, gauges, histograms = snapshot(services().redis, services().partitions)
        except RedisError:  # the spool matters most while Redis is away: answer with what is known
            yield GaugeMetricFamily("answerback_redis_up", "Whether Redis answered this scrape.", value=0)
            return
        yield GaugeMetricFamily("answerback_redis_up", "Whether Redis answered this scrape.", value=1)
        yield GaugeMetricFamily(
            "answerback_quarantined", "Refused callbacks kept in the quarantine.", value=services().quarantine.size()
        )
        yield _counter("answerback_requests_submitted", "Requests submitted.", counters.get("submitted", 0))
        yield _counter(
            "answerback_ratelimit_waits", "Sends that waited for a rate-limit turn.", counters.get("ratelimit_waits", 0)
        )
        yield GaugeMetricFamily(
            "answerback_ratelimit_wait_max_ms",
            "Longest wait for a rate-limit turn (ms).",
            value=counters.get("ratelimit_wait_max_ms", 0),
        )
        for prefix, (name, help_text, label) in COUNTERS.items():
            counted = CounterMetricFamily(name, help_text, labels=[label])
            for key, value in sorted(counters.items()):
                if key.startswith(prefix):
                    counted.add_metric([key[len(prefix) :]], value)
            yield counted
        svc = services()
        gauges["drainers"] = live_drainers(svc.redis, svc.settings.drainer_stale_seconds * 1000, None, svc.partitions)
        for name, value in gauges.items():
            yield GaugeMetricFamily(f"answerback_{name}", f"Requests now: {name.replace('_', ' ')}.", value=value)
        for key, (name, help_text, label) in HISTOGRAMS.items():
            timed = HistogramMetricFamily(name, help_text, labels=[label])
            for outcome, histogram in sorted(histograms[key].items()):
                timed.add_metric([outcome], _cumulative(HISTOGRAM_BUCKETS[key], histogram), histogram.sum)
            yield timed
        yield from _health(services(), Health(services().redis).report())


def _health(svc: Services, report: HealthReport) -> Iterator[Metric]:
    """The heartbeats' figures (store/health.py); what each means is in docs/operations.md."""
    yield GaugeMetricFamily(
        "answerback_workers_alive",
        "Worker processes alive (heart-beating) on this web's Redis database and queue.",
        value=len(report.workers(svc.settings.queue_name)),
    )
    yield GaugeMetricFamily(
        "answerback_sweep_age_seconds",
        "Seconds since the sweep last ran (+Inf: never, as far as Redis remembers).",
        value=math.inf if report.sweep_age_s is None else report.sweep_age_s,
    )
    yield GaugeMetricFamily(
        "answerback_settings_fingerprints",
        "Distinct fingerprints of the shared settings among live processes (more than 1: they disagree).",
        value=len(report.fingerprints()),
    )
    heartbeat = this_process()
    if heartbeat is not None and heartbeat.offset_s is not None:
        yield GaugeMetricFamily(
            "answerback_clock_offset_seconds",
            "This process's clock minus Redis's clock.",
            value=heartbeat.offset_s,
        )
    if report.durability.durable is not None:
        yield GaugeMetricFamily(
            "answerback_redis_durable",
            "Whether Redis keeps every write: appendonly yes and maxmemory-policy noeviction "
            "(absent where CONFIG is forbidden).",
            value=int(report.durability.durable),
        )


def _cumulative(bounds: tuple[float, ...], histogram: Histogram) -> list[tuple[str, float]]:
    """Prometheus buckets (le, observations <= le) from per-bucket counts, ending with +Inf."""
    total, buckets = 0, list[tuple[str, float]]()
    for le, n in zip([*map(floatToGoString, bounds), "+Inf"], histogram.counts, strict=True):
        total += n
        buckets.append((le, total))
    return buckets


def _counter(name: str, help_text: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


@bp.get("/metrics")
def metrics() -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector())
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")
