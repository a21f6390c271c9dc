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
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from redis import Redis
from redis.exceptions import ConnectionError

from store import keys, series
from store.records import STATUSES
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
    tenant's id, and their requests would seem gone."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.TENANT_SALT, secrets.token_hex(SALT_BYTES), nx=True)
        pipe.get(keys.TENANT_SALT)
        if min_replicas:
            pipe.wait(min_replicas, 1000)
        answers = pipe.execute()
    if min_replicas and answers[2] < min_replicas:
        raise ConnectionError(f"only {answers[2]} replica(s) confirmed the tenant salt")
    value = cast("str | bytes", answers[1])
    return value.decode() if isinstance(value, bytes) else value


def move_aliases(redis: Redis, scripts: Scripts, tenants: Iterable[Tenant]) -> int:
    """Move what is filed under each tenant's aliases to the tenant; the records moved. One
    pipelined EXISTS per alias when there is nothing to move."""
    moves = [(alias, tenant.id) for tenant in tenants for alias in tenant.aliases]
    if not moves:
        return 0
    with redis.pipeline(transaction=False) as pipe:
        for alias, _ in moves:
            pipe.exists(keys.tenant_requests(alias))
        found = pipe.execute()
    return sum(
        _move(redis, scripts, alias, tenant) for (alias, tenant), there in zip(moves, found, strict=True) if there
    )


def _move(redis: Redis, scripts: Scripts, alias: str, tenant: str) -> int:
    statuses = " ".join(STATUSES)
    # The Idempotency-Key entries first: a move cut off half way leaves the alias's index in
    # place, so the next look finds it and finishes. Their names hold only a digest of the
    # key: found by SCAN.
    batch: list[str] = []
    for name in redis.scan_iter(match=keys.idempotency(alias, "*"), count=1000):
        batch.append(name.decode() if isinstance(name, bytes) else name)
        if len(batch) == MOVE_BATCH:
            scripts("move_tenant", alias, tenant, 0, statuses, *batch)
            batch = []
    if batch:
        scripts("move_tenant", alias, tenant, 0, statuses, *batch)
    moved = 0
    while True:
        count, left = cast("list[int]", scripts("move_tenant", alias, tenant, MOVE_BATCH, statuses))
        moved += count
        if not left:
            break
    # Then its figures over time, which the records' last steps may have added to meanwhile.
    blocks = [
        n.decode() if isinstance(n, bytes) else n
        for n in redis.scan_iter(match=keys.series(series.scope_of(alias), "*"))
    ]
    for at in range(0, len(blocks), MOVE_BATCH):
        scripts("move_tenant", alias, tenant, 0, statuses, *blocks[at : at + MOVE_BATCH])
    return moved
