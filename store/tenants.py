"""Tenant ids and their aliases.

An API key listed without a name is a tenant whose id is an HMAC of the key with this
deployment's salt (keys.salted_tenant): the ids are in key names and records, and an
unsalted hash there would let anyone who reads them confirm a key, or guess a weak one,
offline. A key listed as `name:key` is the tenant keys.named_tenant(name).

A tenant's aliases are the ids its keys had before: an unnamed key's unsalted id (from
versions before the salt), and for a named key both its unsalted and its salted unnamed id
(the key was listed without a name before, as a rotation starts). Reads by id accept a
record filed under an alias, submissions check the aliases' Idempotency-Key entries, and
`move_aliases` moves what is filed under an alias to the tenant, so that none of a key's
requests leaves its owner whichever way its key is listed.

With several partitions (store/partitions.py) an alias's requests, Idempotency-Key entries and
figures are in every partition: each partition's are moved by move_tenant.lua run there.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from redis import Redis
from redis.exceptions import ConnectionError

from store import keys, series
from store.partitions import ONE, Partitions
from store.records import STATUSES
from store.redis_internals import one_node
from store.scripts import Scripts

SALT_BYTES = 32
MOVE_BATCH = 200  # records, or Idempotency-Key entries, one run of move_tenant.lua moves


@dataclass(frozen=True)
class Tenant:
    id: str
    aliases: tuple[str, ...] = ()


def keep_salt(redis: Redis, held: str) -> bool:
    """Put back the salt this process holds if it is gone from Redis (deleted, or a restore
    from a backup without it), so that processes starting later read the same one; False when
    Redis holds another one."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.TENANT_SALT, held, nx=True)
        pipe.get(keys.TENANT_SALT)
        value = cast("str | bytes", pipe.execute()[1])
    return (value.decode() if isinstance(value, bytes) else value) == held


def salt(redis: Redis, min_replicas: int = 0) -> str:
    """The deployment's salt (hex), created by the first process that asks. With REDIS_MIN_REPLICAS
    it is not used before replicas hold it: a failover losing it would change every unnamed
    tenant's id, and their requests would seem gone. WAIT goes with the write, on one
    connection of the salt's node (on a cluster, one_node: a cluster client sends it elsewhere)."""
    with one_node(redis, keys.TENANT_SALT) as node, node.pipeline(transaction=False) as pipe:
        pipe.set(keys.TENANT_SALT, secrets.token_hex(SALT_BYTES), nx=True)
        pipe.get(keys.TENANT_SALT)
        if min_replicas:
            pipe.wait(min_replicas, 1000)
        answers = pipe.execute()
    if min_replicas and answers[2] < min_replicas:
        raise ConnectionError(f"only {answers[2]} replica(s) confirmed the tenant salt")
    value = cast("str | bytes", answers[1])
    return value.decode() if isinstance(value, bytes) else value


def move_aliases(redis: Redis, scripts: Scripts, tenants: Iterable[Tenant], partitions: Partitions = ONE) -> int:
    """Move what is filed under each tenant's aliases to the tenant, in every partition; the
    records moved. One pipelined EXISTS per alias and partition when there is nothing to move."""
    moves = [(alias, tenant.id) for tenant in tenants for alias in tenant.aliases]
    if not moves:
        return 0
    prefixes = partitions.prefixes()
    with redis.pipeline(transaction=False) as pipe:
        for alias, _ in moves:
            for prefix in prefixes:
                pipe.exists(keys.at(prefix, keys.tenant_requests(alias)))
        found = pipe.execute()
    n = len(prefixes)
    return sum(
        _move(redis, scripts, partitions, alias, tenant)
        for i, (alias, tenant) in enumerate(moves)
        if any(found[i * n : (i + 1) * n])
    )


def _scan(redis: Redis, partitions: Partitions, pattern: str) -> dict[str, list[str]]:
    """The names matching `pattern` (built under keys.PREFIX) in every partition, by partition
    prefix. One SCAN over the store whatever the count (`ab:{*}:` matches every partition's
    hash-tagged prefix): on a cluster, redis-py's RedisCluster.scan_iter scans every primary."""
    prefixes = partitions.prefixes()
    if partitions.count > 1:
        pattern = keys.at(keys.PREFIX + "{*}:", pattern)
    found: dict[str, list[str]] = {prefix: [] for prefix in prefixes}
    for name in redis.scan_iter(match=pattern, count=1000):
        text = name.decode() if isinstance(name, bytes) else name
        prefix = text[: text.index("}:") + 2] if partitions.count > 1 else keys.PREFIX
        if prefix in found:
            found[prefix].append(text)
    return found


def _move(redis: Redis, scripts: Scripts, partitions: Partitions, alias: str, tenant: str) -> int:
    statuses = " ".join(STATUSES)
    # The Idempotency-Key entries first: a move cut off half way leaves the alias's index in
    # place, so the next look finds it and finishes. Their names hold only a digest of the
    # key: found by SCAN.
    for prefix, names in _scan(redis, partitions, keys.idempotency(alias, "*")).items():
        for at in range(0, len(names), MOVE_BATCH):
            scripts("move_tenant", alias, tenant, 0, statuses, *names[at : at + MOVE_BATCH], at=prefix)
    moved = 0
    for prefix in partitions.prefixes():
        while True:
            count, left = cast("list[int]", scripts("move_tenant", alias, tenant, MOVE_BATCH, statuses, at=prefix))
            moved += count
            if not left:
                break
    # Then its figures over time, which the records' last steps may have added to meanwhile.
    for prefix, blocks in _scan(redis, partitions, keys.series(series.scope_of(alias), "*")).items():
        for at in range(0, len(blocks), MOVE_BATCH):
            scripts("move_tenant", alias, tenant, 0, statuses, *blocks[at : at + MOVE_BATCH], at=prefix)
    return moved
