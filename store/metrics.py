"""Counters and histograms kept in Redis, so every web and worker process on every machine
adds to one total.

Counters are one HINCRBY each, in the script or call that counts. Histograms are hotter
(one observation per callback and per send), so a process keeps its observations in
memory and adds them to Redis in one pipelined batch at most once a second, from a
background thread, and once more when the process exits: a process killed outright
(SIGKILL, OOM) loses at most its last second of observations. Request durations are the
exception: they are observed inside the scripts that finish a request (lua/prelude.lua
`finish`), in the same call, so they cost no round trip and are never lost.

The webhook's latencies go into the figures over time too (store/series.py), under the tenant
of the request the callback named: match_callback answers it, so they are counted here by
tenant, a few entries a second whatever the rate. A callback never matched (refused, spooled)
is counted by its request id, whose tenant the flush's script looks up.

A histogram lives in the metrics hash as `h:{histogram}:{label}:{i}` (observations in
bucket i, not cumulative; i = len(buckets) is +Inf) and `h:{histogram}:{label}:sum`.
"""

from __future__ import annotations

import atexit
import logging
import operator
import os
import threading
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from store import keys, series
from store.connection import now_ms
from store.partitions import ONE, Partitions

log = logging.getLogger(__name__)

GAUGES = {
    "retry_scheduled": keys.RETRY,
    "in_flight": keys.LEASES,
    "awaiting_callback": keys.DEADLINES,
    "drainers": keys.DRAINERS,
    "notifications_queued": keys.NOTIFY_DUE,
}

# Upper bounds (seconds) of each histogram's buckets, chosen for what it measures. Redis keeps
# bucket numbers, not bounds: a change of bounds needs the `h:` fields of the metrics hash deleted.
HISTOGRAM_BUCKETS = {
    # receipt to answer of a callback: milliseconds normally; up to ~40 s while a
    # callback is held through a Redis outage
    "webhook": (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0),
    # submitted to final status: a synchronous answer in under a second, a callback
    # within minutes, an expiry after callback_timeout (up to a day)
    "request": (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 10800.0, 43200.0, 86400.0),
    # one upstream send attempt: milliseconds to PLIVO_TIMEOUT (10 s by default)
    "upstream": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
}
HISTOGRAM_PREFIX = "h:"
FLUSH_INTERVAL_S = 1.0
MAXIMA = frozenset({"ratelimit_wait_max_ms"})  # counters that keep the greatest value, not a sum
SERIES_BATCH = 500  # webhook latencies (distinct request, minute, bucket) added per script call


def series_who(tenant: str) -> str:
    """series_observe.lua's name for a tenant known already ('' for none): its scope, whose
    `t:` prefix no request id (a UUID) has."""
    return series.scope_of(tenant) if tenant else ""


def count(redis: Redis, name: str, n: int = 1) -> None:
    redis.hincrby(keys.METRICS, name, n)


@dataclass
class Histogram:
    """One label value's observations, as read back: per-bucket counts (the last is +Inf) and their sum."""

    counts: list[int]
    sum: float


def snapshot(
    redis: Redis, partitions: Partitions = ONE
) -> tuple[dict[str, int], dict[str, int], dict[str, dict[str, Histogram]]]:
    """(counters, gauges, histograms): counters and histograms as all processes wrote
    them, the global hash and every partition's added up (MAXIMA: the greatest); gauges read
    now, summed over partitions (drainers: distinct drain jobs, each registered in every
    partition it claims from). histograms: name -> label value -> Histogram."""
    prefixes = partitions.prefixes()
    hashes = [keys.METRICS, *(keys.at(prefix, keys.METRICS) for prefix in prefixes if prefix != keys.PREFIX)]
    sized = {name: key for name, key in GAUGES.items() if key != keys.DRAINERS}
    now = now_ms()
    with redis.pipeline(transaction=False) as pipe:
        for name in hashes:
            pipe.hgetall(name)
        for prefix in prefixes:
            for api_class in keys.API_CLASSES:
                pipe.llen(keys.at(prefix, keys.outbox(api_class)))
            for key in sized.values():
                pipe.zcard(keys.at(prefix, key))
            pipe.zcount(keys.at(prefix, keys.NOTIFY_DUE), "-inf", now)
            pipe.zrange(keys.at(prefix, keys.DRAINERS), 0, -1)
        answers = pipe.execute()
    written, per_partition = answers[: len(hashes)], answers[len(hashes) :]
    width = len(keys.API_CLASSES) + len(sized) + 2
    summed = dict.fromkeys(["outbox", *sized, "notifications_due"], 0)
    drainers: set[str] = set()
    for p in range(len(prefixes)):
        *sizes, due, registered = per_partition[p * width : (p + 1) * width]
        summed["outbox"] += sum(sizes[: len(keys.API_CLASSES)])
        for name, size in zip(sized, sizes[len(keys.API_CLASSES) :], strict=True):
            summed[name] += size
        summed["notifications_due"] += due
        drainers.update(registered)
    gauges = {
        "outbox": summed["outbox"],
        **{name: len(drainers) if key == keys.DRAINERS else summed[name] for name, key in GAUGES.items()},
        "notifications_due": summed["notifications_due"],
    }
    counters: dict[str, int] = {}
    histograms: dict[str, dict[str, Histogram]] = {name: {} for name in HISTOGRAM_BUCKETS}
    for fields in written:
        for key, value in fields.items():
            if not key.startswith(HISTOGRAM_PREFIX):
                add = max if key in MAXIMA else operator.add
                counters[key] = add(counters[key], int(value)) if key in counters else int(value)
                continue
            parts = key[len(HISTOGRAM_PREFIX) :].split(":")
            if len(parts) != 3:
                continue
            name, label, slot = parts
            if name not in HISTOGRAM_BUCKETS:
                continue
            histogram = histograms[name].setdefault(label, Histogram([0] * (len(HISTOGRAM_BUCKETS[name]) + 1), 0.0))
            if slot == "sum":
                histogram.sum += float(value)
            elif slot.isdigit() and int(slot) < len(histogram.counts):
                histogram.counts[int(slot)] += int(value)
    return counters, gauges, histograms


def histogram_field(name: str, label: str, slot: int | str) -> str:
    """The metrics-hash field of one bucket (its number) or of the sum (`slot="sum"`)."""
    return f"{HISTOGRAM_PREFIX}{name}:{label}:{slot}"


class Observations:
    """One process's histogram observations not yet in Redis. observe() only takes a lock
    and adds to a dict (safe from any thread or greenlet); a daemon thread (a greenlet
    under gevent's monkey-patching) flushes once a second, and atexit once more."""

    def __init__(self, redis: Redis, interval: float = FLUSH_INTERVAL_S, partitions: Partitions = ONE) -> None:
        self.redis = redis
        self.partitions = partitions
        self.interval = interval
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], int] = {}
        self._sums: dict[tuple[str, str], float] = {}
        self._series: dict[tuple[str, int, int], int] = {}  # (who, minute, log bucket) -> webhook latencies
        self._scripts: Any = None  # store.scripts.Scripts, made at the first flush of webhook latencies
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)

    def start(self) -> None:
        self._thread.start()
        atexit.register(self.close)

    def observe(self, name: str, label: str, seconds: float, rid: str | None = None, tenant: str | None = None) -> None:
        """`rid`: a webhook latency, also in the figures over time (the callback's request id, '' for
        none), under `tenant` when known ('' for none), else under the tenant of `rid`'s request."""
        slot = bisect_left(HISTOGRAM_BUCKETS[name], seconds)  # the first bucket whose bound >= seconds
        if rid is not None:
            who = rid if tenant is None else series_who(tenant)
            minute = now_ms() // 60000
            log_bucket = series.slot(seconds * 1000)
        with self._lock:
            key = (name, label, slot)
            self._counts[key] = self._counts.get(key, 0) + 1
            self._sums[name, label] = self._sums.get((name, label), 0.0) + seconds
            if rid is not None:
                at = (who, minute, log_bucket)
                self._series[at] = self._series.get(at, 0) + 1

    def flush(self) -> None:
        """Add what was observed since the last flush to Redis in one pipelined batch; on a
        Redis error keep it for the next flush."""
        with self._lock:
            counts, sums, in_series = self._counts, self._sums, self._series
            self._counts, self._sums, self._series = {}, {}, {}
        if counts:
            try:
                with self.redis.pipeline(transaction=False) as pipe:
                    for (name, label, slot), n in counts.items():
                        pipe.hincrby(keys.METRICS, histogram_field(name, label, slot), n)
                    for (name, label), total in sums.items():
                        pipe.hincrbyfloat(keys.METRICS, histogram_field(name, label, "sum"), total)
                    pipe.execute()
            except RedisError as exc:
                log.warning("could not flush latency histograms (kept for the next try): %s", exc)
                with self._lock:
                    for count_key, n in counts.items():
                        self._counts[count_key] = self._counts.get(count_key, 0) + n
                    for sum_key, total in sums.items():
                        self._sums[sum_key] = self._sums.get(sum_key, 0.0) + total
        if in_series:
            self._flush_series(in_series)

    def _flush_series(self, in_series: dict[tuple[str, int, int], int]) -> None:
        """Add them in scripts of at most SERIES_BATCH observations each (a short script never
        holds Redis up for long); what a Redis error left out is kept for the next flush."""
        from store.scripts import Scripts  # it imports this module (the request histogram's buckets)

        if self._scripts is None:
            self._scripts = Scripts(self.redis)
        pending: dict[str, list[tuple[tuple[str, int, int], int]]] = {}
        for at, n in in_series.items():
            pending.setdefault(self._partition(at[0]), []).append((at, n))
        try:
            for prefix, observed in pending.items():
                while observed:
                    args = [v for (who, minute, slot), n in observed[:SERIES_BATCH] for v in (who, minute, slot, n)]
                    self._scripts("series_observe", *args, at=prefix)
                    del observed[:SERIES_BATCH]
        except RedisError as exc:
            log.warning("could not flush webhook latencies over time (kept for the next try): %s", exc)
            with self._lock:
                for at, n in (entry for observed in pending.values() for entry in observed):
                    self._series[at] = self._series.get(at, 0) + n

    def _partition(self, who: str) -> str:
        """Where series_observe counts `who`'s latencies: a request id's own partition (the script
        reads its record's tenant), else any (the figures of every partition are added up when read)."""
        if who and not who.startswith("t:"):
            return self.partitions.at(who)
        return self.partitions.prefix(self.partitions.home(who))

    def close(self) -> None:
        self._stop.set()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()


_observations: Observations | None = None
_pid = 0
_lock = threading.Lock()


def observe(
    redis: Redis,
    name: str,
    label: str,
    seconds: float,
    rid: str | None = None,
    tenant: str | None = None,
    partitions: Partitions = ONE,
) -> None:
    """Observe one duration (seconds) in histogram `name` under `label`; it reaches Redis
    within about a second. One recorder per process (a new one in a forked child). With `rid`
    (a webhook's: the request id its callback URL named, '' for none) also in the figures over
    time, under `tenant` (that request's, '' for none) or, when None, the tenant `rid`'s record names;
    `partitions`: the store's (the first call's make the process's recorder)."""
    global _observations, _pid
    if _observations is None or _pid != os.getpid():
        fresh = None
        # Nothing that can yield happens under _lock. gunicorn's master does not import this
        # module (tests/test_layout.py keeps it so), but were it imported before a worker patches
        # threading, _lock would be a real lock, and a greenlet blocking on it while its holder
        # waits for the hub would hang the whole process.
        with _lock:
            if _observations is None or _pid != os.getpid():
                fresh = Observations(redis, partitions=partitions)
                _observations, _pid = fresh, os.getpid()
        if fresh is not None:
            fresh.start()
    _observations.observe(name, label, seconds, rid, tenant)


def flush_observations() -> None:
    """Flush this process's observations now (a worker's shutdown hook; tests)."""
    if _observations is not None and _pid == os.getpid():
        _observations.flush()
