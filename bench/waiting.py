"""Webhook cost against a no-op Flask view, and N clients waiting on ?wait while callbacks flow.

Starts an embedded Redis, web (gunicorn.conf.py, WEB_CONCURRENCY=2, no RQ worker: the
requests stay `queued` until the bench delivers their callbacks) and, on the same
gunicorn.conf.py, a no-op Flask app (bench/noop_app.py). The load generator is
bench/http_load.py (raw asyncio streams) in a process of its own. In one run:

  noop       C keep-alive connections POST a JSON callback to the no-op view as fast as
             answers come back (a fixed load, like `wrk -c C`), S seconds: rate and p99
  webhook    the same load on web's /callbacks/plivo, a fresh api_id each (outcome `early`)
  waiters    N requests submitted; N clients each wait on one (GET /v1/requests/{id}?wait=60,
             one connection each); once all are held, the webhook load again (p99 while they
             wait); then a callback for every request (`?rid=`), a steady R a second (not as
             fast as the server can take: a saturated server answers everything late), and each
             waiter's answer time against its record's completed_at
  noop       again, so drift of the machine shows

  python -m bench.waiting [--waiters 1000] [--connections 32] [--seconds 10] [--finish-rate 500] [--signed]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from typing import Any

import psutil
from redis import Redis

from bench.harness import API_KEY, AUTH_TOKEN, ROOT, Stack, terminate_on_signals
from bench.http_load import Answer, drive, hold, percentile, request_bytes
from config import raise_fd_limit
from local import stack as local_stack
from local.processes import Service, wait_for
from local.redis_server import free_port
from store import keys

SUBMISSION = json.dumps({"method": "POST", "path": "Message/", "params": {"src": "1", "dst": "2", "text": "x"}})


class Load:
    """One run of the load generator against a server, with the CPU the server used."""

    def __init__(self, stack: Stack, url: str, groups: list[str], connections: int, signed: bool) -> None:
        self.stack, self.url, self.groups = stack, url, groups
        self.connections, self.signed = connections, signed

    def run(self, mode: str, what: str, seconds: float = 0.0, rate: float = 0.0) -> dict[str, Any]:
        argv = [
            sys.executable,
            "-m",
            "bench.http_load",
            mode,
            self.url,
            what,
            "--connections",
            str(self.connections),
            "--seconds",
            str(seconds),
            "--rate",
            str(rate),
        ]
        if self.signed:
            argv += ["--signed", AUTH_TOKEN]
        cpu0 = self.stack.cpu()
        driver = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            result = json.loads(driver.communicate()[0])
            cpu1 = self.stack.cpu()
        finally:
            driver.kill()
            driver.wait()
        served = sum(result["statuses"].values())
        result["rate"] = served / result["seconds"]
        result["cpu_ms"] = {g: (cpu1[g] - cpu0[g]) * 1000 / max(1, served) for g in self.groups}
        result["cpu_ms"]["load"] = result["cpu_s"] * 1000 / max(1, served)
        result["server_cpu_ms"] = sum(result["cpu_ms"][g] for g in self.groups)
        return result


def web_workers(stack: Stack) -> list[psutil.Process]:
    assert stack.web is not None and stack.web.pid is not None  # a started stack
    return psutil.Process(stack.web.pid).children()


def footprint(stack: Stack) -> tuple[int, int]:
    """(unique memory bytes, open files) of web's worker processes."""
    workers = web_workers(stack)
    return sum(p.memory_full_info().uss for p in workers), sum(p.num_fds() for p in workers)


def submit_all(stack: Stack, n: int) -> list[str]:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    one = request_bytes("POST", stack.web_url + "/v1/requests", SUBMISSION.encode(), headers)
    bodies: list[bytes] = []
    asyncio.run(drive(stack.web_url, iter([one] * n), 32, bodies=bodies))
    return [json.loads(b)["request_id"] for b in bodies]


def completed_at(answer: Answer) -> float | None:
    stamp = json.loads(answer.body).get("completed_at")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None


def waiters_phase(stack: Stack, load: Load, n: int, seconds: float, finish_rate: float) -> dict[str, Any]:
    redis = Redis.from_url(stack.redis_url, decode_responses=True)
    rids = submit_all(stack, n)
    memory0, fds0 = footprint(stack)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    requests = [request_bytes("GET", f"{stack.web_url}/v1/requests/{rid}?wait=60", headers=headers) for rid in rids]
    answers: list[tuple[float, Answer | None]] = []
    holder = threading.Thread(target=lambda: answers.extend(asyncio.run(hold(stack.web_url, requests))), daemon=True)
    opened = time.perf_counter()
    holder.start()

    def counted() -> int:
        held, capped = redis.hmget(keys.METRICS, "waits_held", "waits_capped")
        return int(held or 0) + int(capped or 0)

    wait_for(lambda: counted() >= n, 120, 0.1, f"{n} waiters to be held")
    opened = time.perf_counter() - opened
    memory1, fds1 = footprint(stack)
    print(f"  {n} waiters held after {opened:.1f} s; webhook load while they wait ...", file=sys.stderr, flush=True)
    during = load.run("closed", "/callbacks/plivo", seconds)
    with tempfile.NamedTemporaryFile("w", suffix=".rids", delete=False) as f:
        f.write("\n".join(rids))
    try:
        finishing = load.run("finish", f.name, rate=finish_rate)
    finally:
        os.unlink(f.name)
    holder.join(90)
    held = [
        (at, a)
        for at, a in answers
        if a
        and a.status == 200
        and b"x-wait-capped" not in a.headers.lower()
        and json.loads(a.body)["status"] == "completed"
    ]
    delays = [(at - done) * 1000 for at, a in held if (done := completed_at(a)) is not None]
    capped = redis.hget(keys.METRICS, "waits_capped")
    redis.close()
    return {
        "n": n,
        "opened_s": opened,
        "held": len(held),
        "capped": int(capped or 0),
        "during": during,
        "finishing": finishing,
        "delay_ms": [percentile(delays, 0.5), percentile(delays, 0.99), max(delays, default=0)],
        "memory_per_waiter": (memory1 - memory0) / n,
        "fds_per_waiter": (fds1 - fds0) / n,
    }


def start_noop(stack: Stack) -> Service:
    env = {**stack.env, "PORT": str(free_port())}
    noop = local_stack.start_web(env, stack.dir, "noop", app="bench.noop_app:create_app()")
    assert noop.pid is not None and noop.ready_url is not None  # started, answering there
    stack.extra_groups["noop"] = [noop.pid]
    return noop


def measured(load: Load, seconds: float) -> dict[str, Any]:
    load.run("closed", "/callbacks/plivo", min(2.0, seconds))  # warm-up: connections, scripts, caches
    return load.run("closed", "/callbacks/plivo", seconds)


def line(name: str, r: dict[str, Any]) -> str:
    p50, p99, worst = r["latencies_ms"]
    cpu = "  ".join(f"{g} {v:.3f}" for g, v in r["cpu_ms"].items())
    other = {k: v for k, v in r["statuses"].items() if k != "200"}
    return (
        f"{name:<22} {r['rate']:8.0f}/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {worst:6.0f} ms"
        f"  | CPU ms/request: {cpu}" + (f"  | non-200: {other}" if other else "")
    )


def report(
    noop: list[dict[str, Any]], webhook: dict[str, Any], waiting: dict[str, Any], args: argparse.Namespace
) -> None:
    noop_rate = sum(r["rate"] for r in noop) / len(noop)
    noop_cpu = sum(r["server_cpu_ms"] for r in noop) / len(noop)
    drift = abs(noop[0]["rate"] - noop[1]["rate"]) / noop_rate
    during = waiting["during"]
    kind = "signed" if args.signed else "unsigned"
    print(
        f"RATIO webhook/s : noop/s = {webhook['rate'] / noop_rate:.2f}   (noop mean {noop_rate:.0f}/s, "
        f"before/after differ by {drift:.0%}; {args.connections} connections, {kind} JSON callbacks, fresh api_ids)"
    )
    print(
        f"      CPU per request noop : webhook = {noop_cpu / webhook['server_cpu_ms']:.2f}   "
        f"(noop {noop_cpu:.3f} ms; webhook {webhook['server_cpu_ms']:.3f} ms, web + redis)"
    )
    print(
        f"      webhook p99 with {waiting['n']} waiters : without = "
        f"{during['latencies_ms'][1] / webhook['latencies_ms'][1]:.2f}   "
        f"({during['latencies_ms'][1]:.1f} ms : {webhook['latencies_ms'][1]:.1f} ms); "
        f"rate {during['rate'] / webhook['rate']:.2f} of without"
    )
    d50, d99, dmax = waiting["delay_ms"]
    print(
        f"waiters: {waiting['n']} opened in {waiting['opened_s']:.1f} s, held to the end {waiting['held']}, "
        f"capped {waiting['capped']}; answered after their request finished: p50 {d50:.1f} ms  "
        f"p99 {d99:.1f} ms  max {dmax:.1f} ms"
    )
    print(
        f"         per waiter in web: {waiting['memory_per_waiter'] / 1024:.1f} KiB unique memory, "
        f"{waiting['fds_per_waiter']:.2f} open files"
    )
    print(line("noop (before)", noop[0]))
    print(line("webhook", webhook))
    print(line(f"webhook, {waiting['n']} waiting", during))
    print(line(f"finishing, {args.finish_rate:.0f}/s", waiting["finishing"]))
    print(line("noop (after)", noop[1]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.waiting", description=__doc__.splitlines()[0])
    parser.add_argument("--waiters", type=int, default=1000, help="clients waiting at once (10000: the goal)")
    parser.add_argument("--connections", type=int, default=32, help="connections of the fixed load")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load phase")
    parser.add_argument(
        "--finish-rate",
        type=float,
        default=500.0,
        help="callbacks per second that finish the waited-on requests (0: as fast as taken)",
    )
    parser.add_argument("--signed", action="store_true", help="sign callbacks (default: unsigned, no token)")
    parser.add_argument("--web-processes", type=int, default=2)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    raise_fd_limit()
    terminate_on_signals()
    extra = dict(item.split("=", 1) for item in args.env)
    if not args.signed:
        extra.update(PLIVO_AUTH_TOKEN="", ALLOW_UNSIGNED_CALLBACKS="true")
    try:
        with Stack(
            workers=0, send_concurrency=1, web_processes=args.web_processes, keep_dir=args.keep_logs, extra_env=extra
        ) as stack:
            if args.keep_logs:
                print(f"logs in {stack.dir}", file=sys.stderr, flush=True)
            noop_server = start_noop(stack)
            assert noop_server.ready_url is not None
            noop_load = Load(stack, noop_server.ready_url.rsplit("/", 1)[0], ["noop"], args.connections, args.signed)
            web_load = Load(stack, stack.web_url, ["web", "redis"], args.connections, args.signed)
            try:
                print("noop ...", file=sys.stderr, flush=True)
                noop = [measured(noop_load, args.seconds)]
                print("webhook ...", file=sys.stderr, flush=True)
                webhook = measured(web_load, args.seconds)
                print(f"{args.waiters} waiters ...", file=sys.stderr, flush=True)
                waiting = waiters_phase(stack, web_load, args.waiters, args.seconds, args.finish_rate)
                print("noop again ...", file=sys.stderr, flush=True)
                noop.append(measured(noop_load, args.seconds))
            finally:
                noop_server.stop()
            report(noop, webhook, waiting, args)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
