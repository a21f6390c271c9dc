"""Figures over time: per minute, kept KEEP_DAYS, per tenant and for all tenants.

The scripts that already run at each step count into them (lua/prelude.lua `series_add`), so
the hot paths gain no round trip: submit (submitted), finish (completed, failed, expired and
the time to result, in one field per bucket and final status), quarantine_keep (callbacks
refused), notify_settle (notifications failed).
Webhook latencies are observed in web's memory like the webhook histogram (store/metrics.py)
and added once a second by lua/series_observe.lua, which finds the tenant of each callback's
request in Redis.

Storage: per scope (`all`, and `t:` plus a tenant id) one hash per BLOCK_MINUTES minutes
(keys.series), expiring TTL_S after its last new field. A field is the minute within the block
and a figure: `3s` (submitted in the block's fourth minute), `3r` (callbacks refused), `3n`
(notifications failed); `3c7`, `3f7`, `3e7` (finished so, in log bucket 7 of the time to result:
a finish costs one field, not a count and a bucket); `3w7` (webhook latencies in bucket 7). A
block's hash stays a listpack (about 12 bytes per field) while it holds at most 512 fields
(Redis's default hash-max-listpack-entries), as a block of even busy traffic does; the bound is
FIELDS_PER_MINUTE per minute. docs/series.md has the sizes `bench series` measured.

Percentiles are read from log buckets, BUCKETS_PER_DOUBLING per doubling: a value is shown as
its bucket's geometric middle, within 19 % of the observation; a coarser step merges its
minutes' buckets, so its percentiles are those of every observation in it, not averages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from redis import Redis

from store import keys
from store.partitions import ONE, Partitions

BLOCK_MINUTES = 10
KEEP_DAYS = 7
TTL_S = KEEP_DAYS * 86400 + BLOCK_MINUTES * 60  # a block is read in full until its last minute is 7 days old
BUCKETS_PER_DOUBLING = 2
SLOTS_PER_E = BUCKETS_PER_DOUBLING / math.log(2)  # buckets per factor e: one natural log finds a bucket
SLOTS = 56  # bucket 0 below 1 ms; the last (55) from 2^27 ms (about 37 hours) on

# The answer's count series -> their field letter (lua/prelude.lua series_add's callers). The
# final statuses' fields carry a bucket of the time to result too.
COUNTS = {
    "submitted": "s",
    "completed": "c",
    "failed": "f",
    "expired": "e",
    "callbacks_refused": "r",
    "notifications_failed": "n",
}
FINAL = ("c", "f", "e")
WEBHOOK = "w"
PERCENTILES = (50, 99)
FIELDS_PER_MINUTE = len(COUNTS) - len(FINAL) + (len(FINAL) + 1) * SLOTS

# window -> (number of steps, step in minutes)
HISTOGRAMS = ("time_to_result", "webhook_latency")
WINDOWS = {"hour": (60, 1), "day": (144, 10), "week": (168, 60)}
ALL = "all"


def lua_definitions() -> str:
    """The constants lua/prelude.lua's series functions use (the script loader defines them)."""
    return (
        f"local SERIES_BLOCK = {BLOCK_MINUTES}\nlocal SERIES_TTL = {TTL_S}\n"
        f"local SERIES_SLOTS = {SLOTS}\nlocal SERIES_SLOTS_PER_E = {SLOTS_PER_E!r}\n"
    )


def scope_of(tenant: str | None) -> str:
    """The scope of a tenant's figures, or of all tenants' (None)."""
    return ALL if tenant is None else "t:" + tenant


def slot(ms: float) -> int:
    """The log bucket of a duration in ms, as lua/prelude.lua `series_slot` computes it."""
    if ms < 1:
        return 0
    return min(SLOTS - 1, math.floor(math.log(ms) * SLOTS_PER_E) + 1)


def slot_value(n: int) -> float:
    """What a bucket's observations are shown as (ms): its geometric middle."""
    if n == 0:
        return 0.5
    return round(2 ** ((n - 0.5) / BUCKETS_PER_DOUBLING), 1)


def percentile(buckets: dict[int, int], q: int) -> float | None:
    total = sum(buckets.values())
    if not total:
        return None
    rank, seen = math.ceil(total * q / 100), 0
    for n in sorted(buckets):
        seen += buckets[n]
        if seen >= rank:
            return slot_value(n)
    return None  # not reached: seen ends at total


@dataclass
class Window:
    """The steps of one window ending with the step that holds `now`."""

    steps: int
    step_min: int
    start_min: int  # minutes since the epoch

    @classmethod
    def ending_at(cls, window: str, now_ms: float) -> Window:
        steps, step_min = WINDOWS[window]
        end = (int(now_ms // 60000) // step_min + 1) * step_min
        return cls(steps, step_min, end - steps * step_min)

    @property
    def end_min(self) -> int:
        return self.start_min + self.steps * self.step_min


def read(
    redis: Redis, owners: tuple[str, ...] | None, window: str, now_ms: float, partitions: Partitions = ONE
) -> tuple[Window, dict[str, list[Any]]]:
    """The figures of a tenant and its aliases (`owners`: the ids its key had before, whose
    figures store/tenants.py moves to it every TENANT_MOVE_INTERVAL), or of all tenants (None),
    over `window`: every series has one value per step, every partition's blocks added up. An
    alias's blocks are read only when an EXISTS finds any of them (after a key's rotation, for
    a minute at most)."""
    span = Window.ending_at(window, now_ms)
    first, last = span.start_min // BLOCK_MINUTES, (span.end_min - 1) // BLOCK_MINUTES
    numbers = range(first, last + 1)
    prefixes = partitions.prefixes()
    scopes = [ALL] if owners is None else [scope_of(owner) for owner in owners]
    if len(scopes) > 1:
        with redis.pipeline(transaction=False) as pipe:
            for scope in scopes[1:]:
                for prefix in prefixes:  # one EXISTS per partition: its keys share a slot
                    pipe.exists(*(keys.at(prefix, keys.series(scope, block)) for block in numbers))
            found = pipe.execute()
        n = len(prefixes)
        scopes = scopes[:1] + [scope for i, scope in enumerate(scopes[1:]) if any(found[i * n : (i + 1) * n])]
    with redis.pipeline(transaction=False) as pipe:
        for scope in scopes:
            for prefix in prefixes:
                for block in numbers:
                    pipe.hgetall(keys.at(prefix, keys.series(scope, block)))
        blocks = pipe.execute()
    counts = {name: [0] * span.steps for name in COUNTS}
    letters = {letter: name for name, letter in COUNTS.items()}
    buckets: dict[str, list[dict[int, int]]] = {name: [{} for _ in range(span.steps)] for name in HISTOGRAMS}
    read_blocks = [block for _ in scopes for _ in prefixes for block in numbers]
    for block, fields in zip(read_blocks, blocks, strict=True):
        for field, value in fields.items():
            minute, letter, n = block * BLOCK_MINUTES + int(field[0]), field[1], int(value)
            if not span.start_min <= minute < span.end_min:
                continue
            step = (minute - span.start_min) // span.step_min
            if letter in letters:
                counts[letters[letter]][step] += n
            if letter in FINAL or letter == WEBHOOK:
                into = buckets["time_to_result" if letter in FINAL else "webhook_latency"][step]
                into[int(field[2:])] = into.get(int(field[2:]), 0) + n
    series: dict[str, list[Any]] = dict(counts)
    for name, per_step in buckets.items():
        for q in PERCENTILES:
            series[f"{name}_p{q}_ms"] = [percentile(b, q) for b in per_step]
    return span, series


def tenant_counts(
    redis: Redis, owners: tuple[str, ...], statuses: tuple[str, ...], partitions: Partitions = ONE
) -> dict[str, int]:
    """A tenant's requests by status now (the per-status indexes' sizes, in every partition),
    those still filed under its aliases included (`owners`: the tenant, then its aliases).
    `statuses` is store.records.STATUSES, passed in: store/scripts.py imports this module,
    records imports scripts."""
    with redis.pipeline(transaction=False) as pipe:
        for prefix in partitions.prefixes():
            for owner in owners:
                for status in statuses:
                    pipe.zcard(keys.at(prefix, keys.tenant_requests(owner, status)))
        sizes = pipe.execute()
    return {status: sum(sizes[i :: len(statuses)]) for i, status in enumerate(statuses)}
