"""Redis memory per finished request, by key type, and what a deployment needs for its traffic and RESULT_TTL.

Starts the same stack as bench.throughput (embedded Redis, the sandbox, web, W workers;
callbacks signed, so replay nonces are kept as in production), sends warm-up requests,
then reads Redis (`used_memory`, and `MEMORY USAGE` of every key, grouped by its name
with ids replaced by `{id}`) before and after N `Message/` requests submitted through
the API and completed by their callbacks. Printed per finished request:

  used_memory        what Redis's allocator grew by (the figure to size by)
  by key type        MEMORY USAGE of the keys of each type (shared keys such as the
                     indexes: their growth), so the line items show where it goes
  own data           the bytes of the request's own params and response (JSON), which
                     depend on the API, not on Answerback: the overhead is the rest

and a sizing table: requests per day x RESULT_TTL -> Redis memory.

  python -m bench.memory [--requests N] [--workers W]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections import defaultdict
from typing import cast

import httpx
from redis import Redis

from bench.harness import API_KEY, Stack, terminate_on_signals
from bench.throughput import run_pool, sandbox_stats, set_faults
from local.processes import wait_for

PARAMS = {"src": "14155550100", "dst": "14155550101", "text": "Your code is 482913. It expires in 10 minutes."}
ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-zA-Z_-]{20,}|\b[0-9]{6,}\b")
DAY_S = 86400
PER_DAY = (100_000, 1_000_000, 5_184_000)  # the last: 60 requests/s, Plivo's default API rate
TTLS_S = (DAY_S, 7 * DAY_S, 30 * DAY_S)


def key_type(name: str) -> str:
    """`ab:req:0190…:deliveries` -> `ab:req:{id}:deliveries`; RQ's keys in one group."""
    if name.startswith("rq:"):
        return "rq:* (drain jobs, not per request)"
    return ID.sub("{id}", name)


TRANSIENT = ("ab:nonce:{id}", "rq:* (drain jobs, not per request)")  # gone after REPLAY_WINDOW / 60 s
BUFFERS = ("clients.normal", "clients.slaves", "aof.buffer", "replication.backlog")
Snapshot = tuple[int, dict[str, int], dict[str, int]]  # data bytes; MEMORY USAGE and count by key type


def snapshot(redis: Redis) -> Snapshot:
    """Memory kept for data (allocated less client, AOF and replication buffers, which come
    and go with traffic: the key scan below grows this client's own), and MEMORY USAGE and
    key count per key type."""
    stats = redis.memory_stats()
    kept = int(stats["total.allocated"]) - sum(int(stats.get(name) or 0) for name in BUFFERS)
    usage: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    db = stats.get("db.0") or {}
    usage["(keyspace hash tables)"] = int(db.get("overhead.hashtable.main", 0)) + int(
        db.get("overhead.hashtable.expires", 0)
    )
    names = list(redis.scan_iter(count=1000))
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.memory_usage(name, samples=0)
        sizes = pipe.execute()
    for name, size in zip(names, sizes):
        kind = key_type(name)
        usage[kind] += size or 0
        counts[kind] += 1
    return kept, usage, counts


def encodings(redis: Redis) -> dict[str, str]:
    """The encoding of one key of each per-request type (listpack/ziplist is the compact one)."""
    seen: dict[str, str] = {}
    for name in redis.scan_iter(count=1000):
        kind = key_type(name)
        if kind not in seen:
            seen[kind] = f"{cast(str, redis.type(name))}/{redis.object('encoding', name)}"
    return seen


def own_bytes(client: httpx.Client, rids: list[str]) -> tuple[float, float]:
    """Mean bytes of a request's params and of its response, as compact JSON."""
    params = responses = 0
    for rid in rids:
        record = client.get(f"/v1/requests/{rid}").json()
        responses += len(json.dumps(record["response"], separators=(",", ":")))
    params = len(json.dumps(PARAMS, separators=(",", ":"))) * len(rids)
    return params / len(rids), responses / len(rids)


def finished(redis: Redis) -> int:
    values = redis.hmget("ab:metrics", "finished_completed", "finished_failed", "finished_expired")
    return sum(int(v or 0) for v in values)


def submit_all(stack: Stack, client: httpx.Client, redis: Redis, n: int, stop: threading.Event) -> list[str]:
    body = {"method": "POST", "path": "Message/", "params": PARAMS}
    base = finished(redis)

    def one(_: int) -> str | None:
        answer = client.post("/v1/requests", json=body)
        return answer.json()["request_id"] if answer.status_code == 202 else None

    rids = [r for r in run_pool(n, 16, one, stop) if isinstance(r, str)]
    wait_for(lambda: finished(redis) >= base + n, 120, interval=0.1, message=f"{n} requests to finish")
    wait_for(lambda: sandbox_stats(stack)["callbacks"]["pending"] == 0, 60, message="the callbacks")
    return rids


def settle(redis: Redis) -> None:
    """Let drain jobs leave and the AOF rewrite buffers drain, so the snapshot is of data at rest."""
    wait_for(lambda: redis.zcard("ab:drainers") == 0, 60, interval=0.1, message="drain jobs to leave")
    time.sleep(1.0)


def human(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def report(n: int, before: Snapshot, after: Snapshot, kinds: dict[str, str], own: tuple[float, float]) -> None:
    used = (after[0] - before[0]) / n
    transient = sum(after[1].get(k, 0) - before[1].get(k, 0) for k in TRANSIENT) / n
    params, response = own
    print(f"\nbench.memory  N={n} finished Message/ requests (signed callbacks, default settings)")
    print(f"{'key type':<40} {'keys':>8} {'bytes/request':>14}  encoding")
    for kind in sorted(set(after[1]) | set(before[1])):
        grew = (after[1].get(kind, 0) - before[1].get(kind, 0)) / n
        keys = after[2].get(kind, 0) - before[2].get(kind, 0)
        note = "transient" if kind in TRANSIENT else kinds.get(kind, "")
        if grew or keys:
            print(f"{kind:<40} {keys:>8} {grew:>14.0f}  {note}")
    print("(MEMORY USAGE of a key includes its entry in the keyspace hash table: the lines overlap)")
    print(
        f"memory kept for data grew by {used:.0f} B per finished request"
        f" (of it transient: {transient:.0f} B, nonces for REPLAY_WINDOW and RQ's drain jobs for 60 s)"
    )
    print(f"own data per request: params {params:.0f} B + response {response:.0f} B = {params + response:.0f} B")
    at_rest = used - transient
    print(
        f"OVERHEAD per finished request beyond its own data: {at_rest - params - response:.0f} B at rest,"
        f" {used - params - response:.0f} B while its nonce is kept   (goal <= 1024 B, aim 600 B)"
    )
    used = at_rest
    print(
        "\nsizing: Redis memory for finished requests kept RESULT_TTL, at this request's size"
        f" ({used:.0f} B each at rest; add your own params+response size minus {params + response:.0f} B)"
    )
    print(f"{'requests/day':>14} " + " ".join(f"{'TTL ' + str(t // DAY_S) + ' d':>12}" for t in TTLS_S))
    for per_day in PER_DAY:
        print(f"{per_day:>14,} " + " ".join(f"{human(used * per_day * t / DAY_S):>12}" for t in TTLS_S))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", "-n", type=int, default=2000, help="requests measured (default 2000)")
    parser.add_argument("--workers", "-w", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--warmup", type=int, default=200, help="requests before the first snapshot (200)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with every process's log")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stop = threading.Event()
    terminate_on_signals(stop)
    try:
        with Stack(args.workers, 32, keep_dir=args.keep_logs) as stack:
            set_faults(stack)
            redis = Redis.from_url(stack.redis_url, decode_responses=True)
            with httpx.Client(
                base_url=stack.web_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
            ) as client:
                submit_all(stack, client, redis, args.warmup, stop)
                settle(redis)
                before = snapshot(Redis.from_url(stack.redis_url, decode_responses=True))
                rids = submit_all(stack, client, redis, args.requests, stop)
                settle(redis)
                after = snapshot(Redis.from_url(stack.redis_url, decode_responses=True))
                kinds = encodings(redis)
                own = own_bytes(client, rids[:200])
            redis.close()
    except KeyboardInterrupt:
        print("bench.memory: interrupted; every process stopped", file=sys.stderr)
        return 130
    report(args.requests, before, after, kinds, own)
    return 0


if __name__ == "__main__":
    sys.exit(main())
