"""Notifications one worker sends per second to a 50 ms endpoint, against that endpoint driven directly.

Starts its own embedded Redis and an application endpoint (bench/slow_endpoint.py: 204
after --latency-ms). Then, in the same run:

  baseline   C threads, one keep-alive httpx client each, POST a notification-sized
             body straight to the endpoint: its capacity at the concurrency a worker
             may use towards one host (NOTIFY_HOST_CONCURRENCY=C).
  answerback N finished requests with a notify_url are made through the store's own
             scripts (submit, claim, mark sending, completed: each queues its
             notification), then one `python -m workers` process starts and sends them
             all, signed, recording each attempt.
  baseline   again, so drift of the machine shows.

Both rates are measured by the endpoint itself (requests / first start to last end).
The figure to read is the RATIO answerback : mean baseline.

  python -m bench.notifications [--notifications N] [--concurrency C] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path

import httpx

from bench.harness import group_cpu_seconds, terminate_on_signals
from bench.throughput import run_pool
from local import stack as local_stack
from local.processes import Service, python, wait_for
from local.redis_server import RedisServer, free_port
from notify_hosts import HostPolicy
from store import connect
from store.outbox import Outbox
from store.records import Requests, Submission

SECRET = "whsec_YmVuY2gtbm90aWZpY2F0aW9uLXNlY3JldA=="
BODY = json.dumps(
    {
        "type": "request.completed",
        "timestamp": "2026-11-27T09:00:00.000Z",
        "data": {"request_id": "0" * 36, "padding": "x" * 700},
    }
).encode()


class Endpoint:
    def __init__(self, workdir: Path, latency_s: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = Service(
            "endpoint",
            python("-m", "bench.slow_endpoint", str(self.port), str(latency_s)),
            dict(os.environ),
            workdir,
            self.url + "/stats",
        )

    def reset(self) -> None:
        httpx.delete(self.url + "/stats", timeout=10).raise_for_status()

    def rate(self) -> tuple[int, float]:
        """(requests, per second from the first one's start to the last one's end)."""
        stats = httpx.get(self.url + "/stats", timeout=10).json()
        seconds = stats["last_end"] - stats["first_start"]
        return stats["count"], stats["count"] / seconds if seconds > 0 else 0.0


def baseline(endpoint: Endpoint, n: int, threads: int, stop: threading.Event) -> float:
    local = threading.local()

    def one(_: int) -> bool:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=30, headers={"Content-Type": "application/json"})
        return local.client.post(endpoint.url + "/hook", content=BODY).status_code == 204

    run_pool(threads, threads, one, stop)  # warm-up: a connection per thread
    endpoint.reset()
    results = run_pool(n, threads, one, stop)
    count, rate = endpoint.rate()
    assert count == n and all(r is True for r in results), (count, results[:3])
    return rate


def finished_requests(redis_url: str, n: int, notify_url: str) -> None:
    """N requests finished the way a worker finishes them, each queuing its notification."""
    redis = connect(redis_url)
    requests, outbox = Requests(redis, 3600), Outbox(redis, 3600, max_drainers=1)
    host = HostPolicy.parse(("127.0.0.1",)).check_url(notify_url).authority
    for _ in range(n):
        requests.submit(
            Submission(
                "bench", "POST", "Message/", {"text": "bench"}, "POST", 60, notify_url=notify_url, notify_host=host
            )
        )
    while claimed := outbox.claim("bench", {"api": 500}, [], may_leave=False).items:
        for item in claimed:
            outbox.mark_sending(item)
            outbox.completed(item, {"message": "sent"})
    redis.close()


def delivered(redis_url: str) -> int:
    redis = connect(redis_url)
    try:
        return int(redis.hget("ab:metrics", "notify_delivered") or 0)
    finally:
        redis.close()


def answerback(
    workdir: Path, redis: RedisServer, endpoint: Endpoint, n: int, threads: int, timeout: float
) -> tuple[float, float]:
    """(notifications/s, worker CPU ms per notification)."""
    finished_requests(redis.url, n, endpoint.url + "/hook")
    endpoint.reset()
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "PUBLIC_URL": "http://127.0.0.1:1",  # no requests to send: only their notifications
        "ALLOW_UNSIGNED_CALLBACKS": "true",
        "NOTIFY_HOSTS": "127.0.0.1",
        "WEBHOOK_SECRET": SECRET,
        "NOTIFY_CONCURRENCY": str(threads),
        "NOTIFY_HOST_CONCURRENCY": str(threads),
        "LOG_LEVEL": "warning",
    }
    worker = local_stack.start_worker(env, workdir)
    try:
        wait_for(lambda: delivered(redis.url) >= n, timeout, 0.05, f"{n} notifications delivered")
        assert worker.pid is not None  # started
        cpu = group_cpu_seconds(worker.pid)
    finally:
        worker.stop()
    count, rate = endpoint.rate()
    assert count >= n, count
    return rate, cpu * 1000 / n


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.notifications", description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="NOTIFY_HOST_CONCURRENCY (and NOTIFY_CONCURRENCY) of the worker; the baseline's threads",
    )
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    stop = threading.Event()
    terminate_on_signals(stop)
    workdir = Path(tempfile.mkdtemp(prefix="answerback-bench-notify-"))
    redis = RedisServer(workdir / "redis").start()
    endpoint = Endpoint(workdir, args.latency_ms / 1000)
    ok = False
    try:
        endpoint.service.start()
        n, c = args.notifications, args.concurrency
        before = baseline(endpoint, n, c, stop)
        print(f"baseline (before)  {n} POSTs from {c} threads straight to the endpoint: {before:8.1f}/s", flush=True)
        rate, cpu_ms = answerback(workdir, redis, endpoint, n, c, args.timeout)
        print(
            f"answerback         {n} notifications, one worker, NOTIFY_HOST_CONCURRENCY={c}: {rate:8.1f}/s"
            f"   worker CPU {cpu_ms:.2f} ms per notification",
            flush=True,
        )
        after = baseline(endpoint, n, c, stop)
        print(f"baseline (after)   {after:8.1f}/s", flush=True)
        mean = statistics.mean((before, after))
        ideal = c / (args.latency_ms / 1000)
        print(
            f"RATIO notifications/s : baseline/s = {rate / mean:.2f}   (baseline mean {mean:.1f}/s, "
            f"before/after differ by {abs(before - after) / mean:.0%})"
        )
        print(f"      baseline : ideal {c} in flight / {args.latency_ms:g} ms = {ideal:.0f}/s -> {mean / ideal:.2f}")
        ok = True
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        endpoint.service.stop()
        redis.stop()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench: logs kept in {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
