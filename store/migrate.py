"""Copy a drained single-Redis store into a partitioned one (a Redis Cluster): the upgrade path.

    python3 manage.py migrate --from redis://old-host:6379/0

The target is the store the environment names (REDIS_CLUSTER_NODES or REDIS_URL, and
STORE_PARTITIONS), as web and workers will use it. The source must be drained: nothing queued,
sending or pending, no bulk retry running, nothing quarantined (stop web's submissions, let the
workers finish or the sweep expire what is left, apply or delete the quarantine). What is copied:

- every finished request (completed, failed, expired) still within its keep time: its record as
  stored, its deliveries, notification attempts and timeline, filed in its partition's listings,
  purged when it would have been, its api_id index, and its notification if one is still due;
- the tenant salt (without it every unnamed API key would be a new, empty tenant: a target
  holding another salt is refused), the Idempotency-Key entries, the figures over time and the
  counters.

Not copied: unmatched early callbacks (orphans: they wait for requests that are no longer in
flight), signature nonces (their replay window is minutes) and rate-limit logs.

Each step is safe to repeat: a request, entry or figure already in the target is left as it is,
so an interrupted migration is run again.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis

from store import keys
from store.connection import connect, connect_store, now_ms
from store.partitions import Partitions
from store.record_format import pairs
from store.scripts import Scripts

BATCH = 200
FINAL = ("completed", "failed", "expired")
_RECORD = re.compile(rf"^{re.escape(keys.PREFIX)}req:([0-9a-f-]{{36}})$")
LISTS = (keys.deliveries, keys.notifications, keys.events)


class NotDrained(RuntimeError):
    """The source still has work in flight, or the target cannot take its data."""


@dataclass
class Copied:
    requests: int = 0
    already: int = 0  # in the target before (a repeated run)
    past_keep: int = 0  # due for purging: not copied
    idempotency_keys: int = 0
    series_blocks: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # what is not copied, by kind


def _count(source: Redis, pattern: str) -> int:
    return sum(1 for _ in source.scan_iter(match=pattern, count=1000))


def check_drained(source: Redis) -> None:
    """Refuse a source with anything in flight: it would be lost or sent twice."""
    busy: dict[str, int] = {
        "requests waiting for a send or a callback (deadlines)": source.zcard(keys.DEADLINES),
        "requests held by drain jobs (leases)": source.zcard(keys.LEASES),
        "requests waiting to be sent again": source.zcard(keys.RETRY),
        "requests in the outbox": sum(int(source.llen(keys.outbox(c))) for c in keys.API_CLASSES),
        "bulk retries running": source.zcard(keys.BULK_RETRIES),
        "quarantined callbacks": source.zcard(keys.QUARANTINE),
    }
    found = {what: n for what, n in busy.items() if n}
    if found:
        listed = ", ".join(f"{n} {what}" for what, n in found.items())
        raise NotDrained(
            f"the source store is not drained: {listed}. Stop submissions, let the workers finish (or the "
            "sweep expire what is left), apply or delete the quarantine, then run this again."
        )


def copy_salt(source: Redis, target: Redis) -> None:
    salt = source.get(keys.TENANT_SALT)
    if salt is None:
        return
    target.set(keys.TENANT_SALT, salt, nx=True)
    if target.get(keys.TENANT_SALT) != salt:
        raise NotDrained(
            "the target holds another tenant salt: its unnamed API keys map to other tenants. "
            "Migrate into a new, empty store."
        )


def _scan(source: Redis, pattern: str) -> Iterator[list[str]]:
    batch: list[str] = []
    for name in source.scan_iter(match=pattern, count=1000):
        batch.append(name)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _restore(target: Redis, name: str, dumped: bytes | None, ttl_ms: int) -> bool:
    """RESTORE a DUMPed value unless the name exists (a repeated run)."""
    if dumped is None or target.exists(name):
        return False
    target.restore(name, max(ttl_ms, 0), dumped)
    return True


def migrate(
    source: Redis, raw_source: Redis, target: Redis, raw_target: Redis, partitions: Partitions, result_ttl: int
) -> Copied:
    """`source`/`target` decode answers; `raw_*` do not (DUMP's bytes). See the module's text."""
    check_drained(source)
    copy_salt(source, target)
    copied = Copied()
    scripts, reads = Scripts(target), Scripts(source)
    now = now_ms()
    for batch in _scan(source, keys.PREFIX + "req:*"):
        rids = [m[1] for name in batch if (m := _RECORD.match(name))]
        with raw_source.pipeline(transaction=False) as pipe:
            for rid in rids:
                pipe.get(keys.request(rid))
                for name in LISTS:
                    pipe.dump(name(rid))
                pipe.zscore(keys.NOTIFY_DUE, rid)
            answers = pipe.execute()
        width = 2 + len(LISTS)
        for i, rid in enumerate(rids):
            raw, *dumps, due = answers[i * width : (i + 1) * width]
            if raw is None:
                continue  # purged since the scan
            record = pairs(cast("list[str]", reads("read", rid)))
            if record.get("status") not in FINAL:
                raise NotDrained(f"request {rid} is {record.get('status')}: the source is not drained")
            purge_at = int(float(record.get("completed_at") or now)) + result_ttl * 1000
            if purge_at <= now:
                copied.past_keep += 1
                continue
            prefix = partitions.at(rid)
            for name, dumped in zip(LISTS, dumps, strict=True):
                _restore(raw_target, keys.at(prefix, name(rid)), dumped, 0)
            notify_due = "" if due is None else int(due)
            if scripts("adopt", rid, raw, purge_at, notify_due, at=prefix):
                copied.requests += 1
            else:
                copied.already += 1
            api_id = record.get("api_id")
            if api_id and partitions.count > 1:
                home = keys.at(partitions.prefix(partitions.home(api_id)), keys.api_id(api_id))
                target.set(home, rid, px=purge_at - now)
    copied.idempotency_keys = _copy_keyed(raw_source, raw_target, partitions, keys.PREFIX + "idem:*", _digest_of)
    copied.series_blocks = _copy_keyed(raw_source, raw_target, partitions, keys.SERIES_PREFIX + "*", lambda n: n)
    _copy_counters(source, target)
    copied.skipped = {
        "unmatched early callbacks": _count(source, keys.PREFIX + "orphan:*"),
        "signature nonces": _count(source, keys.PREFIX + "nonce:*"),
    }
    return copied


def _digest_of(name: str) -> str:
    return name.rsplit(":", 1)[1]


def _copy_keyed(source: Redis, target: Redis, partitions: Partitions, pattern: str, home_of: Any) -> int:
    """Copy each key matching `pattern` (with its time to live) under the prefix of the partition
    `home_of(name)` names: the partition the code that reads it looks in."""
    n = 0
    for batch in _scan(source, pattern):
        names = [b.decode() if isinstance(b, bytes) else b for b in batch]
        with source.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.dump(name)
                pipe.pttl(name)
            answers = pipe.execute()
        for i, name in enumerate(names):
            dumped, ttl = answers[2 * i], answers[2 * i + 1]
            if ttl == -2:
                continue  # gone since the scan
            prefix = partitions.prefix(partitions.home(home_of(name)))
            n += _restore(target, keys.at(prefix, name), dumped, ttl if ttl > 0 else 0)
    return n


def _copy_counters(source: Redis, target: Redis) -> None:
    """The counters and histograms of /metrics: into the target's own, each field once."""
    counters = cast("dict[str, str]", source.hgetall(keys.METRICS))
    if counters:
        with target.pipeline(transaction=False) as pipe:
            for name, value in counters.items():
                pipe.hsetnx(keys.METRICS, name, value)
            pipe.execute()


def main(argv: list[str] | None = None) -> int:
    from config import ConfigError, Settings

    parser = argparse.ArgumentParser(prog="manage.py migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", required=True, help="the drained single Redis (a redis:// URL)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"migrate: {error}", file=sys.stderr)
        return 2
    from store.connection import redis_target

    target = connect_store(redis_target(settings))  # the cluster, with REDIS_CLUSTER_NODES
    raw_target = connect_store(redis_target(settings), decode_responses=False)
    source, raw_source = connect(args.source), connect(args.source, decode_responses=False)
    partitions = Partitions(settings.store_partitions)
    partitions.check(target)
    try:
        copied = migrate(source, raw_source, target, raw_target, partitions, settings.result_ttl)
    except NotDrained as error:
        print(f"migrate: {error}", file=sys.stderr)
        return 1
    print(
        f"copied {copied.requests} requests ({copied.already} were there already, {copied.past_keep} past their "
        f"keep time left out) into {partitions.count} partitions, {copied.idempotency_keys} Idempotency-Key "
        f"entries, {copied.series_blocks} blocks of figures; not copied: "
        + ", ".join(f"{n} {what}" for what, n in copied.skipped.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
