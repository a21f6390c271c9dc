"""GET /v1/requests over several partitions (store/partitions.py): each partition's `page`
script reads its part at one instant, and the parts are merged here, newest first (ties:
the greater request id first, as the script orders them), so every request is listed once
and counted exactly.

Each partition's part is found by lua/page_scan.lua, which reads index entries, never records:
the newest `offset + limit` of each near the top, merged here; then lua/page.lua reads, in each
partition holding some of them, just those records (so a page reads `limit` records, and the
records agree with the index at that instant, as with one partition). A deep page would read
offset entries of every partition; instead the score where it starts is searched for by counts,
as page.lua does for a path's indexes, from here: each round runs page_scan.lua in every
partition (one pipelined round trip), counting the entries at or after a few scores that cut
the range left into equal parts, until at most `limit` entries are scored within it: a few
rounds over requests spread in time, and at most log(range) / log(probes + 1) however they are
spread.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from store.partitions import Partitions
from store.record_format import pairs
from store.scripts import ScriptArg, Scripts

# Scores counted per round of the search for a deep page's first entry: PROBES over all partitions
# (a count costs about as much as a round trip's share of each partition's call), at least 7.
PROBES = 128
SHALLOW = 1024  # entries before the page read from the top (offset x partitions) rather than searched for


def page(
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
    prefixes = partitions.prefixes()
    total, top, skip = -1, query[4], offset
    if offset * len(prefixes) > SHALLOW:
        total, first = _start(scripts, prefixes, query, offset, limit, statuses)
        if first is None:
            return total, []
        top, skip = first
    scan: list[tuple[str, tuple[ScriptArg, ...]]] = [
        (prefix, (*query[:4], top, skip + limit, 0, *statuses)) for prefix in prefixes
    ]
    scanned: list[Any] = scripts.each("page_scan", scan)
    if total < 0:
        total = sum(int(answer[0]) for answer in scanned)
    merged = sorted(
        (
            (float(score), rid, p, score)
            for p, answer in enumerate(scanned)
            for rid, score in zip(answer[3::2], answer[4::2], strict=True)
        ),
        reverse=True,
    )
    chosen = merged[skip : skip + limit]
    # Each partition reads its records of the page from its first one's score on, after the
    # entries of that score before the page (ties: none, mostly): page.lua then counts nothing.
    start: dict[int, str] = {}
    for _, _, p, score in chosen:
        start.setdefault(p, score)
    ties = Counter(p for at, _, p, _ in merged[:skip] if p in start and at == float(start[p]))
    taken = Counter(p for _, _, p, _ in chosen)
    reads: list[tuple[str, tuple[ScriptArg, ...]]] = [
        (prefixes[p], (*query[:4], start[p], ties[p], n, *statuses)) for p, n in sorted(taken.items())
    ]
    answers: list[Any] = scripts.each("page", reads) if reads else []
    records = {row["request_id"]: row for answer in answers for row in map(pairs, answer[1:]) if row.get("tenant")}
    return total, [records[rid] for _, rid, _, _ in chosen if rid in records]


def _start(
    scripts: Scripts,
    prefixes: tuple[str, ...],
    query: tuple[str, str, str, str, str],
    offset: int,
    limit: int,
    statuses: tuple[str, ...],
) -> tuple[int, tuple[str, int] | None]:
    """(total, (a score at or before the page's first entry, the entries at or before it that
    come before the page: fewer than `limit`)), or (total, None) past the end. Scores are ms
    with three decimals: the search runs on thousandths of a ms, newer[u] counting the entries
    scored u or later, and stops once at most `limit` entries are scored between lo and hi."""
    found: list[Any] = scripts.each("page_scan", [(prefix, (*query, 0, 0, *statuses)) for prefix in prefixes])
    total = sum(int(n) for n, _, _ in found)
    if offset >= total:
        return total, None
    lo = min(_milli(oldest) for n, oldest, _ in found if int(n))
    hi = max(_milli(newest) for n, _, newest in found if int(n))
    newer, cuts = {lo: total, hi + 1: 0}, max(7, PROBES // len(prefixes))
    while lo < hi and newer[lo] - newer[hi + 1] > limit:  # newer[lo] > offset >= newer[hi + 1]
        probes = sorted({lo + max(1, (hi - lo) * j // (cuts + 1)) for j in range(1, cuts + 1)})
        calls: list[tuple[str, tuple[ScriptArg, ...]]] = [
            (prefix, (*query, 0, len(probes), *map(_score, probes), *statuses)) for prefix in prefixes
        ]
        counts: list[Any] = scripts.each("page_scan", calls)
        for i, u in enumerate(probes):
            newer[u] = sum(int(answer[i]) for answer in counts)
        lo = max([lo, *(u for u in probes if newer[u] > offset)])
        hi = min([hi, *(u - 1 for u in probes if newer[u] <= offset)])
    return total, (_score(hi), offset - newer[hi + 1])


def _milli(score: str) -> int:
    return round(float(score) * 1000)


def _score(u: int) -> str:
    """Thousandths of a ms as a score bound: the same text as submitted_at, so the same double."""
    return f"{u // 1000}.{u % 1000:03d}"
