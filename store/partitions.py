"""The store's partitions: where each request and each structure a script touches lives.

Every Lua script runs in one partition: it is given the partition's key prefix as its one key
(KEYS[1]) and builds every name from it, so on a Redis Cluster the script goes to the node of
that prefix's slot and touches that slot alone. A request lives in one partition, with everything
that hangs on it and its place in the structures the scripts keep (outbox, leases, listings,
figures): a partition is a whole store of its own, and readers merge them.

With one partition (`STORE_PARTITIONS=1`, the default) the prefix is `ab:`, the layout every
single-Redis deployment has always had. With N, partition p's prefix is `ab:{TAG}:` (a hash tag),
TAG chosen so that its slot lies in the p-th of N equal ranges of the 16,384 slots: a cluster
whose primaries hold equal ranges then holds N/primaries partitions each (24, the default on a
cluster, divides evenly among 2, 3, 4, 6, 8, 12 or 24 primaries).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import TypeVar

from redis import Redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from store import keys
from store.connection import OUTAGE, now_ms

T = TypeVar("T")

MAX_PARTITIONS = 1024
COUNT_KEY = keys.PREFIX + "partitions"  # the count the store was made with (set once)
# Keys a single-partition store holds while it has requests: finished ones wait for their purge
# (`purge:next` stays once set), queued ones in the outbox, sent ones under a lease or a deadline.
ONE_PARTITION_MARKS = (
    keys.PURGE_NEXT,
    keys.LEASES,
    keys.DEADLINES,
    *(keys.outbox(api_class) for api_class in keys.API_CLASSES),
)


class PartitionCountMismatch(RuntimeError):
    """The store was made with another number of partitions: this process would look for
    requests where they are not. A start-up refusal."""


def _tag(p: int, count: int) -> str:
    """The first `p.k` (k = 0, 1, ...) whose slot lies in partition p's range."""
    low, high = p * REDIS_CLUSTER_HASH_SLOTS // count, (p + 1) * REDIS_CLUSTER_HASH_SLOTS // count
    k = 0
    while not low <= key_slot(f"{p}.{k}".encode()) < high:
        k += 1
    return f"{p}.{k}"


class Partitions:
    def __init__(self, count: int = 1) -> None:
        if not 1 <= count <= MAX_PARTITIONS:
            raise ValueError(f"the store's partitions must be 1 to {MAX_PARTITIONS}, not {count}")
        self.count = count

    def __repr__(self) -> str:
        return f"Partitions({self.count})"

    @cached_property
    def _prefixes(self) -> tuple[str, ...]:
        if self.count == 1:
            return (keys.PREFIX,)
        return tuple(f"{keys.PREFIX}{{{_tag(p, self.count)}}}:" for p in range(self.count))

    def prefixes(self) -> tuple[str, ...]:
        """Every partition's key prefix, in partition order."""
        return self._prefixes

    def prefix(self, p: int) -> str:
        return self._prefixes[p]

    def of(self, rid: str) -> int:
        """A request id's partition: from its last four hex digits, which are random."""
        if self.count == 1:
            return 0
        return int(rid[-4:], 16) % self.count

    def at(self, rid: str) -> str:
        """The prefix of a request id's partition."""
        return self._prefixes[self.of(rid)]

    def home(self, text: str) -> int:
        """The partition of any other name (an api_id, an Idempotency-Key's digest, a rate-limit
        account): a hash of it, so that names spread evenly."""
        if self.count == 1:
            return 0
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") % self.count

    def new_id(self, partition: int | None = None) -> str:
        """A UUIDv7 request id: unique, ordered by creation time, in `partition` when given (its
        last four hex digits chosen so; they stay uniformly random among such ids). Written as
        uuid.UUID writes one, without making the object, which would be most of what this costs
        (and a submission makes two)."""
        value = (now_ms() << 80) | int.from_bytes(os.urandom(10), "big")
        value = (value & ~(0xF << 76)) | (0x7 << 76)
        value = (value & ~(0x3 << 62)) | (0x2 << 62)
        if partition is not None and self.count > 1:
            low = value & 0xFFFF
            low = low - low % self.count + partition
            if low > 0xFFFF:
                low -= self.count
            value = (value & ~0xFFFF) | low
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def check(self, redis: Redis) -> None:
        """Refuse a store made with another count; record a count above 1 in a store that has
        none (one partition is what a store recording nothing was made with), unless it holds
        requests already, in the single-partition layout (ONE_PARTITION_MARKS)."""
        if self.count > 1 and redis.get(COUNT_KEY) is None:
            with redis.pipeline(transaction=False) as pipe:
                for name in ONE_PARTITION_MARKS:  # one key per command: on a cluster they are apart
                    pipe.exists(name)
                if any(pipe.execute()):
                    raise PartitionCountMismatch(
                        f"STORE_PARTITIONS is {self.count} but this store holds the requests of a single "
                        "partition; set STORE_PARTITIONS=1, or copy them into a new store (manage.py migrate)"
                    )
            redis.set(COUNT_KEY, self.count, nx=True)
        made = int(redis.get(COUNT_KEY) or 1)
        if made != self.count:
            raise PartitionCountMismatch(
                f"STORE_PARTITIONS is {self.count} but this store was made with {made} partitions; "
                f"set STORE_PARTITIONS={made} (the count cannot change once requests are stored)"
            )


ONE = Partitions(1)  # the single-Redis layout: what a store class uses unless given others


def on_each(prefixes: Iterable[str], run: Callable[[str], T]) -> tuple[list[tuple[str, T]], list[BaseException]]:
    """`run(prefix)` in each partition: (prefix, answer) of those that answered, and the outages
    of those that did not. A partition whose shard is away (failing over, on a cluster) is
    passed over, so that the others' work goes on; the outage is raised only when every
    partition had one."""
    answered: list[tuple[str, T]] = []
    failed: list[BaseException] = []
    for prefix in prefixes:
        try:
            answered.append((prefix, run(prefix)))
        except OUTAGE as outage:
            failed.append(outage)
    if failed and not answered:
        raise failed[0]
    return answered, failed
