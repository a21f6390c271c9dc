"""End-to-end throughput: submitted requests completed per second, against the upstream's own capacity.

Starts its own embedded Redis, the sandbox (one gunicorn process) with `slow_answer`
set to the upstream latency, web (gunicorn.conf.py, 2 processes) and W worker
processes with SEND_CONCURRENCY=C. Then, in the same run:

  baseline   a plain httpx thread pool of W*C threads POSTs the same asynchronous
             `Message/` requests straight to the sandbox and waits for each answer
             (callbacks dropped): the upstream's raw capacity at that concurrency.
  answerback N submissions to POST /v1/requests for each sender mode (MODES): `fresh`, a
             plain client on a new connection per submission and every callback on a
             connection of its own, as Plivo delivers them (the figure to plan with);
             `client`, the project's own client (httpx) with fresh callbacks; `kept`,
             kept-alive pycurl everywhere (the best case). The clock runs from the first
             submission until all N are `completed` (the Redis counter ab:metrics
             finished_completed). Callbacks are always signed.
  no-op      a no-op Flask view (bench/noop_app.py) under the same gunicorn.conf.py, driven
             over fresh and over kept-alive connections: its CPU per request, so that web's
             cost per completed request (two inbound requests) reads against two of its
             requests on the same kind of connections, and issue 24's targets are judged in
             one run (`targets`).
  baseline   again, so drift of the machine during the run shows.

The figure to read is each mode's RATIO answerback completed/s : mean baseline/s and its
CPU ms per completed request; the absolute figures are printed for the record only
(2-core machines are noisy).

  python -m bench.throughput [--modes fresh,client,kept] [--requests N] [--workers W] [--concurrency C]
"""

from __future__ import annotations

import argparse
import http.client
import io
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import pycurl
from redis import Redis

from bench.harness import (
    API_KEY,
    AUTH_ID,
    AUTH_TOKEN,
    ROOT,
    Stack,
    machine_busy_seconds,
    terminate_on_signals,
)
from bench.ingest import drive
from bench.waiting import start_noop
from local.processes import wait_for
from store.records import Requests

GOAL_PER_S = 250
PARAMS = {"src": "14155550100", "dst": "14155550101", "text": "bench"}
FINAL = ("finished_completed", "finished_failed", "finished_expired")


@dataclass(frozen=True)
class Mode:
    """How the requests reach web: who submits them, and how the sandbox delivers their callbacks
    (always signed, as Plivo signs them)."""

    name: str
    submitter: str  # "pycurl" kept alive, "client" (answerback_client, httpx), "plain" (a new connection each)
    fresh_callbacks: bool  # each callback on a connection of its own, as Plivo delivers them
    meaning: str

    @property
    def inbound(self) -> tuple[str, str]:
        """How its submission and its callback reach web: each "fresh" or "kept" (a connection
        kept alive), for the no-op view's figures to compare web's with."""
        return ("fresh" if self.submitter == "plain" else "kept", "fresh" if self.fresh_callbacks else "kept")


MODES = {
    mode.name: mode
    for mode in (
        Mode("fresh", "plain", True, "plain client, a new connection per submission; callbacks fresh (as Plivo)"),
        Mode("client", "client", True, "answerback_client (httpx, kept alive); callbacks fresh (as Plivo)"),
        Mode("kept", "pycurl", False, "pycurl kept alive; callbacks kept alive (the best case)"),
    )
}
PLAN_MODE = "fresh"  # the figure to size a deployment with
# Issue 24's targets for the plan mode, CPU ms per completed request: Answerback in all, web for its
# two inbound requests, and web against two no-op Flask requests on the same connections in this run.
TARGET_ALL_MS, TARGET_WEB_MS, TARGET_WEB_TO_NOOP = 2.0, 1.0, 1.5
# Commands Redis counts when a script runs them: part of the script's own time, not sent by clients.
# Ours are read from store/lua (every redis.call there); RQ's scripts' are listed.
SCRIPTED = frozenset(
    name.lower()
    for path in (ROOT / "store" / "lua").glob("*.lua")
    for name in re.findall(r"redis\.p?call\('([A-Z]+)'", path.read_text())
) | {"zadd", "zrem", "zcard", "rpush", "lpop", "del", "expire", "zrangebyscore", "hset", "sadd", "srem", "incr"}


@dataclass
class Phase:
    name: str
    n: int
    seconds: float
    ok: int
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds during the phase
    machine: float = 0.0  # busy share of all cores during the phase
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


# -- driving ---------------------------------------------------------------------------------


def run_pool(n: int, threads: int, one: Callable[[int], object], stop: threading.Event) -> list[object]:
    """Call `one(i)` for i in 0..n-1 from `threads` threads, each taking the next i; results by i."""
    results: list[object] = [None] * n
    counter = itertools.count()

    def loop() -> None:
        while not stop.is_set():
            i = next(counter)  # atomic under the GIL
            if i >= n:
                return
            try:
                results[i] = one(i)
            except Exception as exc:  # counted as a failure, the run goes on
                results[i] = exc

    with ThreadPoolExecutor(threads, thread_name_prefix="bench") as pool:
        for future in [pool.submit(loop) for _ in range(threads)]:
            future.result()
    return results


class Measure:
    """CPU of every process of the stack and of the machine, between start() and stop()."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def start(self) -> Measure:
        self.cpu0, self.machine0, self.t0 = self.stack.cpu(), machine_busy_seconds(), time.perf_counter()
        return self

    def stop(self, phase: Phase) -> Phase:
        cpu1, machine1, wall = self.stack.cpu(), machine_busy_seconds(), time.perf_counter() - self.t0
        phase.cpu = {name: (cpu1[name] - self.cpu0.get(name, 0.0)) / wall for name in cpu1}
        busy, total = machine1[0] - self.machine0[0], machine1[1] - self.machine0[1]
        phase.machine = busy / total if total else 0.0
        return phase


def set_faults(stack: Stack, **faults: object) -> None:
    with httpx.Client(base_url=stack.sandbox_url, timeout=10) as box:
        box.delete("/_sandbox/faults").raise_for_status()
        box.post("/_sandbox/faults", json=faults).raise_for_status()
        box.delete("/_sandbox/stats").raise_for_status()
        box.delete("/_sandbox/objects").raise_for_status()


def sandbox_stats(stack: Stack) -> dict[str, Any]:
    return httpx.get(stack.sandbox_url + "/_sandbox/stats", timeout=10).json()


def baseline(
    stack: Stack, n: int, concurrency: int, upstream_s: float, name: str, stop: threading.Event, procs: int = 1
) -> Phase:
    """The sandbox driven directly: the same async POST, `concurrency` at a time, each waiting for its answer.
    One thread pool in this process, or (procs > 1) split over that many driver processes."""
    set_faults(stack, slow_answer={"rate": 1.0, "seconds": upstream_s}, drop_callback=1.0)
    url = f"{stack.sandbox_url}/v1/Account/{AUTH_ID}/Message/"
    body = {**PARAMS, "callback_url": stack.web_url + "/callbacks/plivo?rid=baseline", "callback_method": "POST"}
    if procs > 1:
        return _split_baseline(stack, n, concurrency, url, body, name, procs)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(
        auth=(AUTH_ID, AUTH_TOKEN), limits=limits, timeout=30, headers={"User-Agent": "answerback/1"}
    ) as client:

        def one(_: int) -> bool:
            return client.post(url, json=body).status_code == 200

        run_pool(concurrency, concurrency, one, stop)  # warm-up: open every connection
        measure = Measure(stack).start()
        started = time.perf_counter()
        results = run_pool(n, concurrency, one, stop)
        seconds = time.perf_counter() - started
    return measure.stop(Phase(name, n, seconds, sum(1 for r in results if r is True)))


def _stdin(driver: subprocess.Popen[str]) -> IO[str]:
    assert driver.stdin is not None  # every driver is started with pipes
    return driver.stdin


def _stdout(driver: subprocess.Popen[str]) -> IO[str]:
    assert driver.stdout is not None
    return driver.stdout


def _split_baseline(
    stack: Stack, n: int, concurrency: int, url: str, body: dict[str, Any], name: str, procs: int
) -> Phase:
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    threads = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    drivers = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.upstream_driver", url, str(share), str(t), json.dumps(body)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for share, t in zip(shares, threads)
    ]
    stack.extra_groups["drivers"] = [d.pid for d in drivers]
    try:
        for d in drivers:
            if _stdout(d).readline().strip() != "ready":
                raise RuntimeError("a baseline driver did not start")
        measure = Measure(stack).start()
        started = time.perf_counter()
        for d in drivers:
            _stdin(d).write("go\n")
            _stdin(d).flush()
        answers = [json.loads(_stdout(d).readline()) for d in drivers]
        seconds = time.perf_counter() - started
        phase = measure.stop(Phase(name, n, seconds, sum(a["ok"] for a in answers)))
    finally:
        for d in drivers:
            d.kill()
            d.wait()
        stack.extra_groups.pop("drivers", None)
    return phase


class Counters:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def finished(self) -> dict[str, int]:
        values = self.redis.hmget("ab:metrics", *FINAL)
        return {name: int(v or 0) for name, v in zip(FINAL, values)}


def answerback(
    stack: Stack,
    n: int,
    submitters: int,
    upstream_s: float,
    warmup: int,
    timeout: float,
    stop: threading.Event,
    mode: Mode = MODES["kept"],
) -> Phase:
    faults: dict[str, object] = {"slow_answer": {"rate": 1.0, "seconds": upstream_s}}
    if mode.fresh_callbacks:
        faults["fresh_connection"] = 1.0
    set_faults(stack, **faults)
    redis = Redis.from_url(stack.redis_url, decode_responses=True)
    counters = Counters(redis)
    with SUBMITTERS[mode.submitter](stack.web_url, submitters) as submit:
        accepted_at: list[float] = [0.0] * n

        def one(i: int) -> str | None:
            request_id = submit()
            if request_id is not None:
                accepted_at[i] = time.perf_counter()
            return request_id

        if warmup:  # connections, Lua scripts, drain jobs, pools: all warm before the clock runs
            base = sum(counters.finished().values())
            run_pool(warmup, submitters, one, stop)
            wait_for(lambda: sum(counters.finished().values()) >= base + warmup, 60, message="the warm-up requests")
            accepted_at = [0.0] * n
            wait_for(lambda: sandbox_stats(stack)["callbacks"]["pending"] == 0, 30, message="warm-up callbacks")
            httpx.delete(stack.sandbox_url + "/_sandbox/stats", timeout=10).raise_for_status()

        before, commands_before = counters.finished(), redis.info("commandstats")
        measure = Measure(stack).start()
        started = time.perf_counter()
        submitting = ThreadPoolExecutor(1, thread_name_prefix="submit").submit(run_pool, n, submitters, one, stop)
        done_at = None
        deadline = started + timeout
        while time.perf_counter() < deadline and not stop.is_set():
            now = counters.finished()
            finished = sum(now[k] - before[k] for k in FINAL)
            if finished >= n:
                done_at = time.perf_counter()
                break
            if submitting.done() and (error := submitting.exception()):
                raise error
            time.sleep(0.01)
        rids = submitting.result()
        seconds = (done_at or time.perf_counter()) - started
        after, commands_after = counters.finished(), redis.info("commandstats")
    phase = measure.stop(
        Phase(f"answerback {mode.name}", n, seconds, after["finished_completed"] - before["finished_completed"])
    )
    phase.extra["mode"] = mode
    accepted = [t for t, rid in zip(accepted_at, rids) if isinstance(rid, str)]
    phase.extra["accepted"] = len(accepted)
    phase.extra["submit_seconds"] = (max(accepted) - started) if accepted else 0.0
    phase.extra["failed"] = after["finished_failed"] - before["finished_failed"]
    phase.extra["expired"] = after["finished_expired"] - before["finished_expired"]
    phase.extra["timed_out"] = done_at is None
    phase.extra["latency"], phase.extra["marks"] = latencies(redis, [r for r in rids if isinstance(r, str)])
    phase.extra["sandbox"] = sandbox_stats(stack)
    phase.extra["commands"] = command_costs(commands_before, commands_after)
    redis.close()
    return phase


def noop_costs(stack: Stack, n: int, connections: int, directory: Path) -> dict[str, float]:
    """A no-op Flask view's CPU ms per request (bench/noop_app.py under the same gunicorn.conf.py
    and WEB_CONCURRENCY as web), by connection: "fresh" (a new connection per request) and
    "kept" (`connections` kept alive). Requests as the sandbox's callbacks (signed JSON), from
    bench/http_load.py in a process of its own, as bench ingest drives them."""
    rids = directory / "noop-rids"
    rids.write_text("".join(f"{uuid.uuid4()}\n" for _ in range(n)))
    server = start_noop(stack)
    try:
        assert server.ready_url is not None
        url = server.ready_url.rsplit("/", 1)[0]
        costs = {}
        for kind in ("kept", "fresh"):
            drive(stack, url, ["noop"], rids, connections, kind == "fresh")  # warm-up
            costs[kind] = drive(stack, url, ["noop"], rids, connections, kind == "fresh")["server_ms"]
        return costs
    finally:
        server.stop()
        stack.extra_groups.pop("noop", None)


def command_costs(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Redis commands run between two INFO commandstats: name -> (calls, microseconds inside Redis)."""
    costs = {}
    for key, stats in after.items():
        old = before.get(key, {})
        calls, usec = stats["calls"] - old.get("calls", 0), stats["usec"] - old.get("usec", 0)
        if calls:
            costs[key.removeprefix("cmdstat_")] = (calls, usec)
    return costs


def commands_line(phase: Phase) -> str:
    """Redis's work per completed request: the commands clients sent (a script counts once; INFO
    commandstats also counts what a script runs under those commands' names, left out here) and
    the time Redis measured inside them. On a busy machine that time includes waits for a core,
    so it can exceed Redis's CPU: read the proportions (which scripts cost most), not the sum."""
    costs, n = phase.extra["commands"], phase.ok
    if not n or not costs:
        return ""
    top = sorted(costs.items(), key=lambda kv: -kv[1][1])[:5]
    calls = sum(c for name, (c, _) in costs.items() if name not in SCRIPTED)
    inside = sum(u for name, (_, u) in costs.items() if name not in SCRIPTED)
    return (
        f"  Redis per completed request: about {calls / n:.1f} commands from clients (the bench's polling"
        " included; commands a script also runs, e.g. RQ's ZADD, are left out),"
        f" {inside / n:.0f} µs inside them by Redis's clock (which runs on while Redis waits for a core); "
        "most time in: " + ", ".join(f"{name} {c / n:.1f}x {u / c:.0f} µs" for name, (c, u) in top)
    )


@contextmanager
def submitter(web_url: str, connections: int) -> Iterator[Callable[[], str | None]]:
    """A function that submits the bench's request and gives its request_id (None unless 202).

    pycurl, one handle (and keep-alive connection) per submitting thread, rather than httpx
    or urllib3: the bench runs on the cores it measures, and every millisecond of CPU it
    spends per submission is taken from Answerback; httpx's pool, URL and header handling
    cost most (bench/README.md, "The harness's clients"). The body is encoded once; at most
    `connections` threads call it.
    """
    url = web_url + "/v1/requests"
    headers = [f"Authorization: Bearer {API_KEY}", "Content-Type: application/json", "Expect:"]
    body = json.dumps({"method": "POST", "path": "Message/", "params": PARAMS}, separators=(",", ":")).encode()
    local = threading.local()
    handles: list[pycurl.Curl] = []

    def submit() -> str | None:
        curl = getattr(local, "curl", None)
        if curl is None:
            curl = local.curl = pycurl.Curl()
            handles.append(curl)
            curl.setopt(pycurl.URL, url)
            curl.setopt(pycurl.HTTPHEADER, headers)
            curl.setopt(pycurl.NOSIGNAL, 1)
            curl.setopt(pycurl.TIMEOUT, 30)
            curl.setopt(pycurl.PROXY, "")
            # libcurl may resend it on a reused connection that died: harmless here
            curl.setopt(pycurl.POSTFIELDS, body)
        answer = io.BytesIO()
        curl.setopt(pycurl.WRITEDATA, answer)
        curl.perform()
        if curl.getinfo(pycurl.RESPONSE_CODE) != 202:
            return None
        return json.loads(answer.getvalue())["request_id"]

    try:
        yield submit
    finally:
        for curl in handles:
            curl.close()


@contextmanager
def client_submitter(web_url: str, connections: int) -> Iterator[Callable[[], str | None]]:
    """The project's own Python client (answerback_client: httpx, one pool of kept-alive
    connections shared by the threads), as an application would submit."""
    from answerback_client import Client

    with Client(web_url, API_KEY, retries=0) as client:

        def submit() -> str | None:
            return client.submit("POST", "Message/", PARAMS).request_id

        yield submit


@contextmanager
def plain_submitter(web_url: str, connections: int) -> Iterator[Callable[[], str | None]]:
    """A plain HTTP client (the standard library's http.client) on a new connection per
    submission, closed after the answer: an application that keeps no pool."""
    parts = urlsplit(web_url)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    body = json.dumps({"method": "POST", "path": "Message/", "params": PARAMS}).encode()

    def submit() -> str | None:
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        try:
            connection.request("POST", "/v1/requests", body, headers)
            answer = connection.getresponse()
            data = answer.read()
        finally:
            connection.close()
        return json.loads(data)["request_id"] if answer.status == 202 else None

    yield submit


SUBMITTERS = {"pycurl": submitter, "client": client_submitter, "plain": plain_submitter}


def latencies(redis: Redis, rids: list[str]) -> tuple[dict[str, list[int]], list[tuple[int, int, int]]]:
    """Milliseconds per completed request: submit->completed, submit->sent (queueing), sent->completed."""
    records = Requests(redis, result_ttl=1)
    rows = [
        tuple(r.fields.get(n) for n in ("status", "submitted_at", "sent_at", "completed_at"))
        for r in map(records.get, rids)
        if r is not None
    ]
    total: list[int] = []
    queued: list[int] = []
    upstream: list[int] = []
    marks: list[tuple[int, int, int]] = []
    for status, submitted_at, sent_at, completed_at in rows:
        if status != "completed" or not (submitted_at and sent_at and completed_at):
            continue
        submitted, sent, completed = int(float(submitted_at)), int(sent_at), int(completed_at)
        total.append(completed - submitted)
        queued.append(sent - submitted)
        upstream.append(completed - sent)
        marks.append((submitted, sent, completed))
    return {"submit->completed": total, "submit->sent": queued, "sent->completed": upstream}, marks


def stage_line(marks: list[tuple[int, int, int]]) -> str:
    """When the last request was submitted, sent and completed, from the first submission: which stage lags."""
    if not marks:
        return "stages: no completed records"
    first = min(m[0] for m in marks)
    last = [max(m[i] for m in marks) - first for i in range(3)]
    n = len(marks)
    return (
        "stages (records' clocks, from the first submission): last submitted at "
        f"{last[0] / 1000:.2f} s ({n / max(last[0], 1) * 1000:.0f}/s), last sent at {last[1] / 1000:.2f} s "
        f"({n / max(last[1], 1) * 1000:.0f}/s), last completed at {last[2] / 1000:.2f} s "
        f"({n / max(last[2], 1) * 1000:.0f}/s)"
    )


# -- reporting -------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_line(phase: Phase) -> str:
    parts = [f"{name} {share * 100:.0f}%" for name, share in phase.cpu.items()]
    others = phase.machine * (os.cpu_count() or 1) - sum(phase.cpu.values())
    return (
        f"  CPU, % of one core: {'  '.join(parts)}  | not ours {max(0.0, others) * 100:.0f}%"
        f"  | machine busy {phase.machine * 100:.0f}% of {os.cpu_count()} cores"
    )


def cost_line(phase: Phase) -> str:
    """CPU milliseconds per completed request, by process: what a saturated machine divides its cores by."""
    if not phase.ok:
        return ""
    per = per_request_ms(phase)
    workers = sum(v for k, v in per.items() if k.startswith("worker"))
    own = per.get("web", 0.0) + workers + per.get("redis", 0.0)
    harness = per.get("sandbox", 0.0) + per.get("bench", 0.0)
    return (
        f"  CPU ms per completed request: web {per.get('web', 0):.2f}  workers {workers:.2f}  "
        f"redis {per.get('redis', 0):.2f}  = Answerback {own:.2f}  | sandbox {per.get('sandbox', 0):.2f}  "
        f"bench client {per.get('bench', 0):.2f}  = harness {harness:.2f}"
    )


def per_request_ms(phase: Phase) -> dict[str, float]:
    """CPU milliseconds per completed (or answered) request, by process group."""
    return {name: share * phase.seconds / phase.ok * 1000 for name, share in phase.cpu.items()} if phase.ok else {}


def ceiling_lines(ab: Phase, base: float, goal: float = 0.6) -> list[str]:
    """The best ratio this run could show, from the answerback phase's own CPU figures. Every process
    shares the cores, so completed/s <= free cores x 1000 / (Answerback + harness ms per request),
    where free cores are those not taken by other work meanwhile; and the sandbox is ONE process
    (its state is in memory), so it can use at most one core: completed/s <= 1000 / its ms per
    request, which in this phase include sending every callback (the baseline drops them)."""
    per = per_request_ms(ab)
    if not per or not base:
        return []
    cores = os.cpu_count() or 1
    others = max(0.0, ab.machine * cores - sum(ab.cpu.values()))
    free = cores - others
    own = per.get("web", 0.0) + per.get("redis", 0.0) + sum(v for k, v in per.items() if k.startswith("worker"))
    harness = per.get("sandbox", 0.0) + per.get("bench", 0.0)
    sandbox_cap = 1000 / per["sandbox"] if per.get("sandbox") else float("inf")

    def best(answerback_ms: float) -> float:
        return min(free * 1000 / (answerback_ms + harness), sandbox_cap) / base

    lines = [
        f"ratio ceiling on this machine given harness CPU = {best(0.0):.2f}   (Answerback costing nothing: "
        f"{free:.2f} cores free of other work x 1000 / harness {harness:.2f} ms = "
        f"{free * 1000 / harness:.0f}/s; the one sandbox process at {per.get('sandbox', 0):.2f} ms per request "
        f"(answer + callback) on at most one core: {sandbox_cap:.0f}/s)",
        f"      ratio ceiling at Answerback's {own:.2f} ms = {best(own):.2f}",
    ]
    if goal * base > sandbox_cap:
        lines.append(f"      ratio {goal:g}: out of reach here whatever Answerback costs (the sandbox process caps it)")
    else:
        need, quiet = (n * 1000 / (goal * base) - harness for n in (free, cores))
        lines.append(
            f"      ratio {goal:g} needs Answerback <= {need:.2f} ms per request with {free:.2f} free cores"
            f" ({quiet:.2f} ms with all {cores} free)"
        )
    return lines


def report(args: argparse.Namespace, phases: list[Phase], noop: dict[str, float]) -> None:
    bases = [p for p in phases if p.name.startswith("baseline")]
    runs = [p for p in phases if p.name.startswith("answerback")]
    in_flight = args.workers * args.concurrency
    base = statistics.mean(p.rate for p in bases)
    spread = (max(p.rate for p in bases) - min(p.rate for p in bases)) / base if base else 0.0
    print()
    print(
        f"bench.throughput  N={args.requests} per mode  workers={args.workers}  SEND_CONCURRENCY={args.concurrency}"
        f"  (in flight {in_flight})  upstream {args.upstream_ms:g} ms  submitters={args.submitters}"
        f"  baseline procs={args.baseline_procs}"
        f"  cores={os.cpu_count()}"
    )
    for p in phases:
        if p in runs:
            print()
            print(f"{p.name}: {p.extra['mode'].meaning}")
            x = p.extra
            accepted_per_s = x["accepted"] / x["submit_seconds"] if x["submit_seconds"] else 0
            print(
                f"{p.name:<18} {p.ok:>6} completed in {p.seconds:6.2f} s = {p.rate:7.1f} completed/s"
                f"   submissions accepted {x['accepted']} at {accepted_per_s:.1f}/s"
                + (f"   failed {x['failed']}" if x["failed"] else "")
                + (f"   expired {x['expired']}" if x["expired"] else "")
                + ("   TIMED OUT" if x["timed_out"] else "")
            )
        else:
            print(f"{p.name:<18} {p.ok:>6} answered  in {p.seconds:6.2f} s = {p.rate:7.1f} answers/s")
        print(cpu_line(p))
        if p in runs:
            print(cost_line(p))
            if line := commands_line(p):
                print(line)
            mode_details(p, base, accepted_per_s)
    print()
    ideal = in_flight / (args.upstream_ms / 1000)
    print(
        f"baseline mean {base:.1f}/s, before/after differ by {spread * 100:.0f}%;"
        f" baseline : ideal {in_flight} in flight / {args.upstream_ms:g} ms = {ideal:.0f}/s -> {base / ideal:.2f}"
    )
    print(summary_table(runs, base))
    print(noop_table(runs, noop))
    plan = next((p for p in runs if p.extra["mode"].name == PLAN_MODE), runs[0])
    verdict = "met" if plan.rate >= GOAL_PER_S else "NOT met"
    print(
        f"goal >= {GOAL_PER_S} completed/s on this machine ({plan.extra['mode'].name} mode): {verdict}"
        f" ({plan.rate:.0f}/s; absolute, noisy)"
    )
    if plan.extra["mode"].name == PLAN_MODE:
        print(targets_line(plan, noop))


def mode_details(ab: Phase, base: float, accepted_per_s: float) -> None:
    print(
        f"RATIO completed/s : baseline/s = {ab.rate / base:.2f}"
        f"      submissions/s : baseline/s = {accepted_per_s / base:.2f}"
    )
    for line in ceiling_lines(ab, base):
        print(line)
    lat = ab.extra["latency"]
    print(
        "latency ms (from the records' timestamps):  "
        + "   ".join(f"{name} p50 {pct(v, 0.5):.0f} p95 {pct(v, 0.95):.0f}" for name, v in lat.items())
    )
    print(stage_line(ab.extra["marks"]))
    box = ab.extra["sandbox"]
    print(
        f"sandbox during {ab.name}: {box['requests']['total']} requests {box['requests']['by_status']},"
        f" callbacks delivered {box['callbacks']['delivered']} failed {box['callbacks']['failed']}"
    )


def summary_table(runs: list[Phase], base: float) -> str:
    """The modes side by side: the ratio, and CPU ms per completed request by process."""
    lines = [
        "mode     RATIO  completed/s   CPU ms per completed request: web  workers  redis = Answerback"
        "  | sandbox  bench client"
    ]
    for p in runs:
        per = per_request_ms(p)
        workers = sum(v for k, v in per.items() if k.startswith("worker"))
        own = per.get("web", 0.0) + workers + per.get("redis", 0.0)
        mark = "   <- plan with this one" if p.extra["mode"].name == PLAN_MODE else ""
        lines.append(
            f"{p.extra['mode'].name:<8} {p.rate / base if base else 0:5.2f}  {p.rate:11.1f}"
            f"   {' ' * 30}{per.get('web', 0):4.2f}  {workers:7.2f}  {per.get('redis', 0):5.2f}"
            f" = {own:10.2f}  | {per.get('sandbox', 0):7.2f}  {per.get('bench', 0):12.2f}{mark}"
        )
    return "\n".join(lines)


def noop_table(runs: list[Phase], noop: dict[str, float]) -> str:
    """Web's CPU per completed request against two no-op Flask requests on the same connections."""
    lines = [
        f"no-op Flask view, same gunicorn.conf.py, CPU ms per request: over a fresh connection"
        f" {noop['fresh']:.2f}, over a kept-alive one {noop['kept']:.2f}",
        "mode     web   two no-op requests (submission, callback)   web : no-op",
    ]
    for p in runs:
        mode: Mode = p.extra["mode"]
        twice = sum(noop[kind] for kind in mode.inbound)
        web = per_request_ms(p).get("web", 0.0)
        lines.append(
            f"{mode.name:<8} {web:4.2f}   {twice:4.2f} ({' + '.join(mode.inbound)})"
            f"{' ' * (30 - len(' + '.join(mode.inbound)))}{web / twice:5.2f}"
        )
    return "\n".join(lines)


def targets_line(plan: Phase, noop: dict[str, float]) -> str:
    """Issue 24's targets for the plan mode, each met or not in this run."""
    per = per_request_ms(plan)
    web = per.get("web", 0.0)
    own = web + per.get("redis", 0.0) + sum(v for k, v in per.items() if k.startswith("worker"))
    to_noop = web / (2 * noop["fresh"])

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return (
        f"targets ({plan.extra['mode'].name} mode): Answerback {own:.2f} ms <= {TARGET_ALL_MS:g}:"
        f" {verdict(own <= TARGET_ALL_MS)};  web {web:.2f} ms <= {TARGET_WEB_MS:g}: {verdict(web <= TARGET_WEB_MS)};"
        f"  web : two no-op requests {to_noop:.2f} <= {TARGET_WEB_TO_NOOP:g}: {verdict(to_noop <= TARGET_WEB_TO_NOOP)}"
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", "-n", type=int, default=2000, help="submissions measured per mode (2000)")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated sender modes, run in this order between the two baselines (default all: "
        + "; ".join(f"{m.name}: {m.meaning}" for m in MODES.values())
        + ")",
    )
    parser.add_argument("--workers", "-w", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", "-c", type=int, default=32, help="SEND_CONCURRENCY per worker (default 32)")
    parser.add_argument("--upstream-ms", type=float, default=50.0, help="the sandbox's answer latency (default 50)")
    parser.add_argument("--submitters", type=int, default=16, help="client threads submitting (default 16)")
    parser.add_argument("--warmup", type=int, default=100, help="requests through Answerback before the clock (100)")
    parser.add_argument("--callback-delay", type=float, default=0.01, help="SANDBOX_CALLBACK_DELAY s (0.01)")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on the answerback phase after s (120)")
    parser.add_argument(
        "--baseline-procs",
        type=int,
        default=None,
        help="processes the baseline's W*C threads are split over (default max(W, 2): shaped "
        "like the workers, and never one client process whose GIL caps the baseline; "
        "1 = one thread pool in the bench process)",
    )
    parser.add_argument("--web-processes", type=int, default=2, help="WEB_CONCURRENCY (default 2)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for every process, e.g. --env MAX_DRAINERS=8 (repeatable)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="cProfile web and worker processes (per thread) into DIR; see bench/README.md",
    )
    parser.add_argument("--profile-clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with every process's log")
    args = parser.parse_args(argv)
    args.modes = [name.strip() for name in args.modes.split(",") if name.strip()]
    if not args.modes or set(args.modes) - set(MODES):
        parser.error(f"--modes: choose among {', '.join(MODES)}")
    if args.baseline_procs is None:
        args.baseline_procs = max(args.workers, 2)
    args.baseline_procs = max(1, min(args.baseline_procs, args.workers * args.concurrency))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stop = threading.Event()
    terminate_on_signals(stop)
    extra = dict(item.split("=", 1) for item in args.env)
    stack_kwargs: dict[str, Any] = {}
    if args.profile:
        from bench.profiling import stack_options

        extra, stack_kwargs = stack_options(args.profile, args.profile_clock, extra)
    phases: list[Phase] = []
    noop: dict[str, float] = {}
    in_flight = args.workers * args.concurrency
    try:
        with Stack(
            args.workers,
            args.concurrency,
            args.callback_delay,
            args.web_processes,
            keep_dir=args.keep_logs,
            extra_env=extra,
            **stack_kwargs,
        ) as stack:
            print(
                f"bench.throughput: stack up in {stack.dir} (web {stack.web_url}, sandbox {stack.sandbox_url})",
                file=sys.stderr,
                flush=True,
            )
            upstream_s = args.upstream_ms / 1000
            phases.append(
                baseline(stack, args.requests, in_flight, upstream_s, "baseline (before)", stop, args.baseline_procs)
            )
            print(f"  {phases[-1].name}: {phases[-1].rate:.1f}/s", file=sys.stderr, flush=True)
            for name in args.modes:
                phases.append(
                    answerback(
                        stack, args.requests, args.submitters, upstream_s, args.warmup, args.timeout, stop, MODES[name]
                    )
                )
                print(f"  {phases[-1].name}: {phases[-1].rate:.1f}/s", file=sys.stderr, flush=True)
            noop = noop_costs(stack, args.requests, args.submitters, stack.dir)
            print(f"  no-op view: {noop}", file=sys.stderr, flush=True)
            phases.append(
                baseline(stack, args.requests, in_flight, upstream_s, "baseline (after)", stop, args.baseline_procs)
            )
            if args.keep_logs:
                print(f"bench.throughput: logs in {stack.dir}", file=sys.stderr)
    except KeyboardInterrupt:
        stop.set()
        print("bench.throughput: interrupted; every process stopped", file=sys.stderr)
        return 130
    finally:
        stop.set()
    report(args, phases, noop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
