"""GET /v1/requests over several partitions (store/partitions.py): each partition's `page`
script reads its part at one instant, and the parts are merged here, newest first (ties:
the greater request id first, as the script orders them), so every request is listed once
and counted exactly.

A page near the top reads `offset + limit` entries of each partition. A deep one would then
read offset entries of every partition; instead its first entry's score is found by halving
on counts as lua/page.lua does for a path's indexes, from here: each round is one pipelined
batch of ZCOUNTs that cuts the range of scores left into PROBES + 1 parts, so about ten
rounds find it even over weeks of requests. Then each partition reads only its entries tied
at that score before the page and the page itself.
"""

from __future__ import annotations

from typing import Any

from redis import Redis

from store import keys
from store.partitions import Partitions
from store.scripts import ScriptArg, Scripts

PROBES = 15  # scores counted per round of the search for a deep page's first entry
SHALLOW = 256  # read from the top when offset x partitions is at most this: one round, no search


def page(
    redis: Redis,
    scripts: Scripts,
    partitions: Partitions,
    query: tuple[str, str, str, str, str],
    offset: int,
    limit: int,
    statuses: tuple[str, ...],
) -> tuple[int, list[dict[str, str]]]:
    """(total, records of the page) of `query` = (tenant, status, path, since, until) as the
    `page` script takes them ('' for none); `statuses`: store.records.STATUSES (records
    imports this module)."""
    tenant, status, path, since, until = query
    prefixes = partitions.prefixes()
    total, top, skip = -1, until, offset
    if offset * len(prefixes) > SHALLOW:
        indexes = [name for prefix in prefixes for name in _indexes(prefix, tenant, status, path, statuses)]
        total, first = _start(redis, indexes, since or "-inf", until or "+inf", offset)
        if first is None:
            return total, []
        top, skip = first
    calls: list[tuple[str, tuple[ScriptArg, ...]]] = [
        (prefix, (tenant, status, path, since, top, 0, skip + limit, *statuses)) for prefix in prefixes
    ]
    answers: list[Any] = scripts.each("page", calls)
    rows = [_pairs(row) for answer in answers for row in answer[1:]]
    rows = [row for row in rows if row.get("tenant")]
    rows.sort(key=lambda row: (float(row["submitted_at"]), row["request_id"]), reverse=True)
    if total < 0:
        total = sum(int(answer[0]) for answer in answers)
    return total, rows[skip : skip + limit]


def _indexes(prefix: str, tenant: str, status: str, path: str, statuses: tuple[str, ...]) -> list[str]:
    """The listing indexes of one partition that the filter reads, as lua/page.lua picks them."""
    if not path:
        return [keys.at(prefix, keys.tenant_requests(tenant, status or None))]
    return [keys.at(prefix, keys.tenant_path_requests(tenant, path, st)) for st in ([status] if status else statuses)]


def _start(redis: Redis, indexes: list[str], low: str, high: str, offset: int) -> tuple[int, tuple[str, int] | None]:
    """(total, (the score of the page's first entry, the entries tied at it before the page)),
    or (total, None) past the end. Scores are ms with three decimals: the search runs on
    thousandths of a ms, `newer(u)` counting the entries scored u or later."""
    with redis.pipeline(transaction=False) as pipe:
        for index in indexes:
            pipe.zcount(index, low, high)
            pipe.zrangebyscore(index, low, high, start=0, num=1, withscores=True)
            pipe.zrevrangebyscore(index, high, low, start=0, num=1, withscores=True)
        found = pipe.execute()
    counts, oldest, newest = found[0::3], found[1::3], found[2::3]
    total = sum(counts)
    if offset >= total:
        return total, None
    live = [index for index, n in zip(indexes, counts, strict=True) if n]
    lo = min(_milli(entry[0][1]) for entry in oldest if entry)  # newer(lo) = total > offset
    hi = max(_milli(entry[0][1]) for entry in newest if entry)
    newer = {hi + 1: 0}
    while lo < hi:  # the latest u with more than `offset` entries at or after it lies in [lo, hi]
        probes = sorted({lo + max(1, (hi - lo) * j // (PROBES + 1)) for j in range(1, PROBES + 1)})
        with redis.pipeline(transaction=False) as pipe:
            for u in probes:
                for index in live:
                    pipe.zcount(index, _score(u), high)
            answer = pipe.execute()
        for i, u in enumerate(probes):
            newer[u] = sum(answer[i * len(live) : (i + 1) * len(live)])
        lo = max([lo, *(u for u in probes if newer[u] > offset)])
        hi = min([hi, *(u - 1 for u in probes if newer[u] <= offset)])
    return total, (_score(lo), offset - newer[lo + 1])


def _milli(score: float) -> int:
    return round(score * 1000)


def _score(u: int) -> str:
    """Thousandths of a ms as a score bound: the same text as submitted_at, so the same double."""
    return f"{u // 1000}.{u % 1000:03d}"


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))
