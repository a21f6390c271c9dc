"""The operator's console over 100,000 requests of one tenant: the page's data calls, timed over HTTP.

Starts the stack of bench.throughput without workers (nothing is sent: the requests stay as
written), submits one request over HTTP to learn the tenant's id, then writes N requests of
that tenant straight through the store (the `submit` script in pipelines, as web runs it):
four upstream paths, each with an Idempotency-Key, each given an api_id (the
`register_api_id` script), a third of them expired by the sweep (run here, as of a later time).
Then times, over `--runs` calls each after a few untimed ones, the calls the page makes:

  first page        GET /v1/requests?limit=20
  q by api_id       GET /v1/requests?q={an api_id}        (a different one each call)
  q by Idem-Key     GET /v1/requests?q={an Idempotency-Key}
  filtered          GET /v1/requests?path=Message/&status=expired&since=..&until=.. (half the time span)
  path, page 5      GET /v1/requests?path=Message/&offset=80 (a path alone merges its statuses' indexes)
  path, last page   the same at the path's last offset (a deep page finds its start by counts)
  GET /             the page itself

and prints each one's median and p95 (target: each under 200 ms), then the memory the listing's
indexes take per request (MEMORY USAGE of the tenant's index keys, by kind) and Redis's growth
per request while the N were written.

  python -m bench.console [--requests N] [--runs R] [--partitions P]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

import httpx
from redis import Redis

from bench.harness import API_KEY, Stack, terminate_on_signals
from store import keys
from store.connection import now_ms
from store.partitions import Partitions
from store.records import Requests, Submission, _digest, new_id
from store.scripts import Scripts, source

PATHS = ("Message/", "Message/", "Call/", "Number/", "Recording/")  # Message/ twice: 40 % of them
PARAMS = {"src": "14155550100", "dst": "14155550101", "text": "Your code is 482913."}
TTL = 604800
BATCH = 1000


def write_requests(redis: Redis, tenant: str, n: int, parts: Partitions) -> tuple[list[str], list[str]]:
    """N requests of `tenant` through the store's scripts, each in its partition, in pipelines;
    their api_ids and Idempotency-Keys. Every third one has a callback_timeout of 1 s (the
    sweep expires it)."""
    requests = Requests(redis, TTL, partitions=parts)
    submit, register = redis.register_script(source("submit")), redis.register_script(source("register_api_id"))
    api_ids, idem_keys = [], []
    for start in range(0, n, BATCH):
        with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + BATCH)):
                idem = f"order-{i}"
                sub = Submission(
                    tenant=tenant,
                    method="POST",
                    path=PATHS[i % len(PATHS)],
                    params=PARAMS,
                    callback_method="POST",
                    callback_timeout=1 if i % 3 == 0 else 86400,
                    idempotency_key=idem,
                )
                rid, _, body_digest, args = requests.submit_args(sub)
                if parts.count > 1:  # in the Idempotency-Key's home partition, with its keys there
                    rid = parts.new_id(parts.home(_digest(idem)))
                    idem_key = keys.at(parts.at(rid), keys.idempotency(tenant, _digest(idem)))
                    args = (rid, *args[1:8], idem_key, f"{rid} {body_digest}", *args[10:])
                submit(keys=[parts.at(rid)], args=list(args), client=pipe)
                api_id = new_id()
                now = now_ms()
                if parts.count > 1:  # the api_id's home pointer, as web and workers write it
                    pipe.set(keys.at(parts.prefix(parts.home(api_id)), keys.api_id(api_id)), rid, ex=TTL)
                register(keys=[parts.at(rid)], args=[rid, api_id, now, now + 86_400_000, TTL, ""], client=pipe)
                api_ids.append(api_id)
                idem_keys.append(idem)
            pipe.execute()
    later = now_ms() + 5000
    Scripts(redis).each("sweep", [(at, (later, n, TTL, new_id(), later - 60_000)) for at in parts.prefixes()])
    return api_ids, idem_keys


def timed(runs: int, call: Callable[[int], httpx.Response]) -> list[float]:
    """Milliseconds of each of `runs` calls, after 3 untimed ones; every answer must be a 200."""
    times = []
    for i in range(-3, runs):
        began = time.perf_counter()
        answer = call(i)
        took = (time.perf_counter() - began) * 1000
        if answer.status_code != 200:
            raise RuntimeError(f"{answer.request.url}: {answer.status_code} {answer.text[:200]}")
        if i >= 0:
            times.append(took)
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def index_memory(redis: Redis, tenant: str, parts: Partitions) -> dict[str, tuple[int, int]]:
    """Bytes and key count of the tenant's listing indexes in every partition, by kind."""
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for at in parts.prefixes():
        prefix = keys.at(at, keys.tenant_requests(tenant).removesuffix("all"))
        names = list(redis.scan_iter(prefix + "*", count=1000))
        with redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.memory_usage(name, samples=0)
            sizes = pipe.execute()
        for name, size in zip(names, sizes, strict=True):
            rest = name.removeprefix(prefix)
            kind = {"all": "all", "st": "by status", "path": "by path", "pst": "by path and status"}[rest.split(":")[0]]
            found[kind][0] += size or 0
            found[kind][1] += 1
    return {kind: (size, count) for kind, (size, count) in found.items()}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000, help="requests of the one tenant (default 100000)")
    parser.add_argument("--runs", type=int, default=30, help="timed calls of each kind (default 30)")
    parser.add_argument("--partitions", type=int, default=1, help="STORE_PARTITIONS of the store (default 1)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with every process's log")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    terminate_on_signals()
    parts = Partitions(args.partitions)
    with Stack(0, 1, keep_dir=args.keep_logs, extra_env={"STORE_PARTITIONS": str(parts.count)}) as stack:
        redis = Redis.from_url(stack.redis_url, decode_responses=True)
        with httpx.Client(base_url=stack.web_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as web:
            web.post("/v1/requests", json={"method": "POST", "path": "Message/", "params": PARAMS}).raise_for_status()
            tenant = keys.salted_tenant(str(redis.get(keys.TENANT_SALT)), API_KEY)
            before = int(redis.info("memory")["used_memory"])
            began = time.perf_counter()
            api_ids, idem_keys = write_requests(redis, tenant, args.requests, parts)
            wrote = time.perf_counter() - began
            grown = (int(redis.info("memory")["used_memory"]) - before) / args.requests
            newest = web.get("/v1/requests", params={"limit": 1}).json()["objects"][0]["submitted_at"]
            listed = web.get("/v1/requests", params={"limit": 1}).json()["meta"]["total_count"]
            oldest = web.get("/v1/requests", params={"limit": 1, "offset": listed - 1}).json()["objects"][0]
            span = (oldest["submitted_at"], newest)
            since, until = _quarter(span[0], span[1], 1), _quarter(span[0], span[1], 3)
            pick = random.Random(22)
            paths = web.get("/v1/requests", params={"limit": 1, "path": "Message/"}).json()["meta"]["total_count"]
            deepest = max(0, paths - 20)
            filtered = {"path": "Message/", "status": "expired", "since": since, "until": until}
            calls: dict[str, Callable[[int], httpx.Response]] = {
                "first page": lambda _: web.get("/v1/requests", params={"limit": 20}),
                "q by api_id": lambda _: web.get("/v1/requests", params={"q": pick.choice(api_ids)}),
                "q by Idempotency-Key": lambda _: web.get("/v1/requests", params={"q": pick.choice(idem_keys)}),
                "path+status+time filter": lambda _: web.get("/v1/requests", params={"limit": 20, **filtered}),
                "path filter, page 5": lambda _: web.get(
                    "/v1/requests", params={"limit": 20, "offset": 80, "path": "Message/"}
                ),
                "path filter, last page": lambda _: web.get(
                    "/v1/requests", params={"limit": 20, "offset": deepest, "path": "Message/"}
                ),
                "GET /": lambda _: web.get("/"),
            }
            for q in (*api_ids[:3], *idem_keys[-3:]):  # each found, once
                assert web.get("/v1/requests", params={"q": q}).json()["meta"]["total_count"] == 1, q
            matched = web.get("/v1/requests", params={"limit": 1, **filtered}).json()["meta"]["total_count"]
            results = {name: timed(args.runs, call) for name, call in calls.items()}
        memory = index_memory(redis, tenant, parts)
    print(
        f"\nbench.console  N={args.requests} requests of one tenant in {parts.count} partition(s), "
        f"written in {wrote:.1f} s; {args.runs} runs each"
    )
    print(f"filter: {filtered} -> {matched} requests")
    print(f"{'call':<26} {'median ms':>10} {'p95 ms':>8}  (target: < 200 ms)")
    for name, values in results.items():
        print(f"{name:<26} {statistics.median(values):>10.1f} {p95(values):>8.1f}")
    print(f"\n{'index':<22} {'keys':>6} {'bytes/request':>14}")
    for kind, (size, count) in sorted(memory.items()):
        print(f"{kind:<22} {count:>6} {size / args.requests:>14.1f}")
    total = sum(size for size, _ in memory.values()) / args.requests
    print(f"{'all indexes':<22} {'':>6} {total:>14.1f}")
    print(f"Redis used_memory grew {grown:.0f} B per request written (queued/expired records, outbox, indexes)")
    return 0


def _quarter(oldest: str, newest: str, q: int) -> str:
    """The time q quarters of the way from `oldest` to `newest` (ISO 8601, ms)."""
    a, b = datetime.fromisoformat(oldest), datetime.fromisoformat(newest)
    moment = a + (b - a) * q / 4
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


if __name__ == "__main__":
    sys.exit(main())
