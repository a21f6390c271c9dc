"""Redis Cluster: the spread over 3 primaries, Redis memory and CPU per request per shard, as ratios to one Redis.

Three phases, one after the other, each with a stack of its own (bench.harness.Stack: the
sandbox, web, W workers; callbacks signed, so nonces are kept as in production), every
primary with one replica (as production runs them: the replica's feed costs its primary CPU):

  single        the store on one Redis, STORE_PARTITIONS=1, RQ's queue on the same Redis
                (a single-Redis deployment as it is): the baseline
  partitioned   the same Redis with STORE_PARTITIONS=P: what the partitions cost by themselves
  cluster       the store on a Redis Cluster of 3 primaries + 3 replicas from the bundled
                redis-server (local.redis_cluster.LocalCluster), REDIS_CLUSTER_NODES its seeds,
                STORE_PARTITIONS=P (24 unless told); RQ on the stack's own plain Redis (REDIS_URL)

Each phase sends warm-up requests, then N `Message/` requests through the API, completed by
their signed callbacks, and reads every Redis before and after: the request records each
primary holds (SCAN), the memory it keeps for data (MEMORY STATS total.allocated less client,
AOF and replication buffers, as bench.memory reads it) and its CPU (INFO cpu, user + system)
and commands (INFO commandstats) from the first submission until the last request finished.
Printed:

  spread      each primary's records and share; the worst deviation from a third, PASS or
              FAIL against 10 % (and the binomial noise to expect at this N)
  per shard   memory growth per request it holds, Redis CPU per request it holds
  ratios      each phase's memory and CPU per request (the cluster's summed over its shards,
              with RQ's Redis) to the single Redis's in the same run: on these noisy machines
              the ratio is the figure, not the absolute one
  commands    per request, by phase: the commands Redis ran and its time inside them
  scripts     with --scripts: script calls per request by name, counted with MONITOR on
              every primary (which costs Redis CPU: the CPU figures then overstate)

  python -m bench.cluster [--requests N] [--partitions P] [--workers W] [--scripts]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from redis import Redis
from redis.cluster import RedisCluster

from bench.harness import API_KEY, Stack, machine_busy_seconds, terminate_on_signals
from bench.memory import BUFFERS, PARAMS
from bench.throughput import run_pool, sandbox_stats, set_faults
from config import CLUSTER_PARTITIONS
from local.processes import wait_for
from local.redis_cluster import LocalCluster
from local.redis_server import RedisServer
from store import keys
from store.partitions import Partitions
from store.scripts import NAMES, source

RECORD = re.compile(r"ab:(\{[^}]*\}:)?req:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FINISHED = ("finished_completed", "finished_failed", "finished_expired")
LIMIT = 0.10  # each primary's share within 10 % of a third
CORES = os.cpu_count() or 1
POLL_S = 0.25  # the bench's own reads of the counters: a few µs of Redis each, far below 1 % of a phase


# -- one Redis node, measured -----------------------------------------------------------------


@dataclass
class Reading:
    kept: int  # bytes kept for data
    records: int  # request records it holds
    rq: int  # MEMORY USAGE of RQ's keys (a single Redis holds them beside the store)


@dataclass
class Node:
    """One redis-server: `role` is "primary" (holds the store: memory, records, CPU), "replica"
    or "rq" (RQ's own Redis; CPU only). `stacks` when it is the Stack's own Redis, whose CPU
    Stack.cpu() counts already."""

    name: str
    client: Redis  # a plain client of this one node (no cluster routing)
    role: str = "primary"
    stacks: bool = False
    partitions: int = 0
    readings: list[Reading] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # seconds, at the start and the end of the requests
    commands: list[Counter[str]] = field(default_factory=list)  # calls; "name µs": time inside

    def read(self) -> None:
        stats = self.client.memory_stats()
        kept = int(stats["total.allocated"]) - sum(int(stats.get(name) or 0) for name in BUFFERS)
        records = sum(1 for name in self.client.scan_iter(match="ab:*req:*", count=1000) if RECORD.fullmatch(name))
        names = list(self.client.scan_iter(match="rq:*", count=1000))
        with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.memory_usage(name, samples=0)
            rq = sum(size or 0 for size in pipe.execute())
        self.readings.append(Reading(kept, records, rq))

    def clock(self) -> None:
        info = self.client.info("cpu")
        self.cpu.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
        stats: Counter[str] = Counter()
        for name, figures in self.client.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            stats[command] += int(figures["calls"])
            stats[command + " µs"] += int(figures["usec"])
        self.commands.append(stats)

    def grew(self) -> tuple[int, int]:
        """Records and bytes kept (less RQ's keys) it gained over the measured requests."""
        before, after = self.readings[0], self.readings[-1]
        return after.records - before.records, (after.kept - before.kept) - (after.rq - before.rq)

    def cpu_s(self) -> float:
        """Seconds of CPU it spent while the measured requests ran."""
        return self.cpu[-1] - self.cpu[0]


# -- one phase ------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    store: Redis | RedisCluster  # the store's client: counters across partitions
    parts: Partitions
    nodes: list[Node]
    accepted: int = 0
    scripts: Counter[str] = field(default_factory=Counter)  # with --scripts: calls by script name
    wall: float = 0.0
    machine: float = 0.0  # share of the machine's cores busy during the requests
    ours: float = 0.0  # share of the cores this bench's processes used then

    @property
    def primaries(self) -> list[Node]:
        return [node for node in self.nodes if node.role == "primary"]

    def finished(self) -> int:
        names = {keys.at(prefix, keys.METRICS) for prefix in self.parts.prefixes()} | {keys.METRICS}
        total = 0
        for name in names:  # one key per command: each lives on its partition's node
            total += sum(int(v or 0) for v in self.store.hmget(name, list(FINISHED)))
        return total

    def drainers(self) -> int:
        return sum(int(self.store.zcard(keys.at(prefix, keys.DRAINERS))) for prefix in self.parts.prefixes())

    def records(self) -> int:
        return sum(node.grew()[0] for node in self.primaries)

    def memory_per_request(self) -> float:
        return sum(node.grew()[1] for node in self.primaries) / self.records()

    def cpu_per_request(self, role: str = "primary") -> float:
        """Seconds of Redis CPU per request, of the nodes in that role, or of every node but replicas ("store+rq")."""
        roles = ("primary", "rq") if role == "store+rq" else (role,)
        return sum(node.cpu_s() for node in self.nodes if node.role in roles) / self.records()

    def commands_per_request(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for node in self.nodes:
            if node.role != "replica":
                total += node.commands[-1]
                total -= node.commands[0]
        return total


def submit_all(stack: Stack, client: httpx.Client, phase: Phase, n: int, stop: threading.Event) -> int:
    """N submissions from 16 threads; returns once every accepted one has finished and the
    sandbox has no callback left to deliver. The number accepted."""
    body = {"method": "POST", "path": "Message/", "params": PARAMS}
    base = phase.finished()

    def one(_: int) -> bool:
        return client.post("/v1/requests", json=body).status_code == 202

    accepted = sum(1 for ok in run_pool(n, 16, one, stop) if ok is True)
    wait_for(
        lambda: phase.finished() >= base + accepted, 180, interval=POLL_S, message=f"{accepted} requests to finish"
    )
    wait_for(lambda: sandbox_stats(stack)["callbacks"]["pending"] == 0, 60, message="the callbacks")
    return accepted


def settle(phase: Phase) -> None:
    """Drain jobs gone and buffers drained, so that memory is read at rest."""
    wait_for(lambda: phase.drainers() == 0, 60, interval=0.1, message="drain jobs to leave")
    time.sleep(1.0)


def run_phase(stack: Stack, phase: Phase, args: argparse.Namespace, stop: threading.Event) -> Phase:
    set_faults(stack)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=stack.web_url, headers=headers, timeout=30) as client:
        submit_all(stack, client, phase, args.warmup, stop)
        settle(phase)
        for node in phase.primaries:
            node.read()
        stack0, machine0 = sum(stack.cpu().values()), machine_busy_seconds()
        for node in phase.nodes:
            node.clock()
        t0 = time.perf_counter()
        with count_scripts(phase, args.scripts):
            phase.accepted = submit_all(stack, client, phase, args.requests, stop)
        phase.wall = time.perf_counter() - t0
        for node in phase.nodes:
            node.clock()
        stack1, machine1 = sum(stack.cpu().values()), machine_busy_seconds()
        settle(phase)
        for node in phase.primaries:
            node.read()
    busy, total = machine1[0] - machine0[0], machine1[1] - machine0[1]
    outside = sum(node.cpu_s() for node in phase.nodes if not node.stacks)  # Redis the Stack does not count
    phase.machine = busy / total if total else 0.0
    phase.ours = (stack1 - stack0 + outside) / (phase.wall * CORES)
    return phase


@contextmanager
def count_scripts(phase: Phase, enabled: bool) -> Iterator[None]:
    """With `--scripts`: every script call on the store's primaries, by name, from MONITOR
    (Redis 6.2 and 7.0 count no script by name). MONITOR costs Redis CPU: the run's CPU
    figures then overstate."""
    if not enabled:
        yield
        return
    names = {hashlib.sha1(source(name).encode()).hexdigest(): name for name in NAMES}
    done = threading.Event()

    def watch(node: Node) -> None:
        with node.client.monitor() as monitor:
            for entry in monitor.listen():
                if done.is_set():
                    return
                words = str(entry["command"]).split(maxsplit=2)
                if words[0].upper() == "EVALSHA" and len(words) > 1:
                    phase.scripts[names.get(words[1], words[1][:12])] += 1

    threads = [threading.Thread(target=watch, args=(node,), daemon=True) for node in phase.primaries]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # each MONITOR connected
    try:
        yield
    finally:
        done.set()
        for node in phase.primaries:
            node.client.ping()  # an entry for each watcher to see `done` by
        for thread in threads:
            thread.join(5)


@contextmanager
def replica_of(stack: Stack) -> Iterator[Node]:
    """A replica of the stack's own Redis, once in sync: a single Redis is run with one too."""
    assert stack.redis is not None
    server = RedisServer(stack.dir / "replica", replica_of=stack.redis.port).start()
    try:
        client = Redis.from_url(server.url, decode_responses=True)
        wait_for(lambda: client.info("replication")["master_link_status"] == "up", 60, message="the replica")
        yield Node("replica", client, role="replica")
    finally:
        server.stop()


def single(args: argparse.Namespace, stop: threading.Event, partitions: int) -> Phase:
    env = {"STORE_PARTITIONS": str(partitions)}
    with Stack(args.workers, 32, keep_dir=args.keep_logs, extra_env=env) as stack, replica_of(stack) as replica:
        client = Redis.from_url(stack.redis_url, decode_responses=True)
        node = Node("one Redis", client, stacks=True, partitions=partitions)
        name = "single" if partitions == 1 else "partitioned"
        return run_phase(stack, Phase(name, client, Partitions(partitions), [node, replica]), args, stop)


def cluster(args: argparse.Namespace, stop: threading.Event) -> Phase:
    folder = Path(tempfile.mkdtemp(prefix="answerback-bench-cluster-"))
    nodes = LocalCluster(folder, primaries=3, replicas=1)
    try:
        nodes.start()
        env = {"REDIS_CLUSTER_NODES": nodes.seeds, "STORE_PARTITIONS": str(args.partitions)}
        with Stack(args.workers, 32, keep_dir=args.keep_logs, extra_env=env) as stack:
            parts = Partitions(args.partitions)
            primaries = nodes.nodes[: nodes.primary_count]
            measured = [Node(f"primary {i + 1}", node.client()) for i, node in enumerate(primaries)]
            for prefix in parts.prefixes():
                measured[primaries.index(nodes.primary_of(prefix))].partitions += 1
            measured += [Node(f"replica {i + 1}", n.client(), role="replica") for i, n in enumerate(nodes.nodes[3:])]
            measured.append(Node("RQ's Redis", Redis.from_url(stack.redis_url, decode_responses=True), "rq", True))
            store = RedisCluster(host="127.0.0.1", port=primaries[0].port, decode_responses=True)
            try:
                return run_phase(stack, Phase("cluster", store, parts, measured), args, stop)
            finally:
                store.close()
    except BaseException:
        print(f"bench: cluster logs kept in {folder}", file=sys.stderr)
        args.keep_logs = True
        raise
    finally:
        nodes.stop()
        if not args.keep_logs:
            shutil.rmtree(folder, ignore_errors=True)


# -- the report -------------------------------------------------------------------------------


def spread_lines(phase: Phase) -> tuple[list[str], float]:
    counts = [node.grew()[0] for node in phase.primaries]
    n = sum(counts)
    third = n / len(counts)
    lines = [f"{'':<11} {'partitions':>10} {'records':>8} {'share':>7} {'deviation from a third':>23}"]
    worst = 0.0
    for node, count in zip(phase.primaries, counts):
        deviation = (count - third) / third if third else 0.0
        worst = max(worst, abs(deviation))
        lines.append(f"{node.name:<11} {node.partitions:>10} {count:>8} {count / n:>7.1%} {deviation:>+23.1%}")
    sd = math.sqrt(2 / n) if n else 0.0  # a share's binomial sd as a fraction of a third: sqrt(N p (1-p)) / (N p)
    verdict = "PASS" if worst <= LIMIT else "FAIL"
    lines.append(
        f"worst deviation {worst:.1%} -> {verdict} (limit {LIMIT:.0%}); binomial noise alone at N={n:,}: a share's"
        f" sd is {sd:.1%} of a third, so 10 % is {LIMIT / sd:.1f} sd"
        f" (it holds nearly always from N of about {math.ceil(2 * 3.5**2 / LIMIT**2):,}, 3.5 sd)"
    )
    if n != phase.accepted:
        lines.append(f"(records gained {n} differ from requests accepted {phase.accepted}: read the figures with care)")
    return lines, worst


def commands_line(phase: Phase, top: int = 6) -> str:
    """The commands Redis spent most time in per request (store and RQ, replicas left out):
    calls per request and µs per request. Redis counts the commands a script runs too, and
    their time is also inside the script's (evalsha's)."""
    stats, n = phase.commands_per_request(), phase.records()
    names = sorted((k for k in stats if not k.endswith(" µs")), key=lambda k: -stats[k + " µs"])[:top]
    return f"  {phase.name:<12} " + "  ".join(f"{k} {stats[k] / n:.2f}x {stats[k + ' µs'] / n:.0f}" for k in names)


def row(name: str, memory: float, cpu_s: float) -> None:
    print(f"{name:<36} {memory:>9.0f} {cpu_s * 1e6:>13.0f}")


def report(args: argparse.Namespace, phases: list[Phase]) -> int:
    base, shards = phases[0], phases[-1]
    print(
        f"\nbench.cluster  N={args.requests:,} finished Message/ requests per phase (signed callbacks);"
        f" partitioned and cluster: {args.partitions} partitions; every primary with one replica"
    )
    for phase in phases:
        print(
            f"  {phase.name:<12} {phase.accepted} requests in {phase.wall:5.1f} s = {phase.accepted / phase.wall:4.0f}"
            f" completed/s; machine busy {phase.machine:.0%} of {CORES} cores, this bench's processes"
            f" {phase.ours:.0%} (the rest: other work on the machine)"
        )
    print("\nspread of the cluster's request records over its primaries")
    lines, worst = spread_lines(shards)
    print("\n".join(lines))

    print(f"\n{'per request it holds':<36} {'memory B':>9} {'Redis CPU µs':>13}")
    for phase in phases[:-1]:
        row(phase.name + " (one Redis)", phase.memory_per_request(), phase.cpu_per_request())
    for node in shards.primaries:
        count, kept = node.grew()
        row("cluster " + node.name, kept / count, node.cpu_s() / count)
    row("cluster, the 3 primaries summed", shards.memory_per_request(), shards.cpu_per_request())
    print(f"{'  + RQ on its own Redis':<36} {'':>9} {shards.cpu_per_request('store+rq') * 1e6:>13.0f}")
    print(
        "replicas' CPU per request (not in the ratios): "
        + ", ".join(f"{phase.name} {phase.cpu_per_request('replica') * 1e6:.0f} µs" for phase in phases)
    )

    mem0, cpu0 = base.memory_per_request(), base.cpu_per_request()
    print("\nRATIO to the single Redis, per request:")
    for phase in phases[1:]:
        both = phase.cpu_per_request("store+rq")
        print(
            f"  {phase.name:<12} memory {phase.memory_per_request() / mem0:.2f}   Redis CPU {both / cpu0:.2f}"
            + (f" (the shards alone {phase.cpu_per_request() / cpu0:.2f})" if phase is shards else "")
            + f"   completed/s {phase.accepted / phase.wall / (base.accepted / base.wall):.2f}"
        )
    print(f"  (completed/s: {CORES} cores shared by every process: no figure of how throughput grows with shards)")
    print("\nthe commands Redis spent most time in: calls and µs per request (a script's own commands counted too)")
    for phase in phases:
        print(commands_line(phase))
    if args.scripts:
        print("\nscript calls per request (MONITOR, --scripts: the CPU figures above overstate with it)")
        for phase in phases:
            n = phase.records()
            print(f"  {phase.name:<12} " + "  ".join(f"{k} {v / n:.2f}" for k, v in phase.scripts.most_common()))
    print(
        "memory: growth of the data kept, less RQ's keys; nonces (REPLAY_WINDOW) are in it."
        f" CPU: from the first submission until the last request finished ({POLL_S} s polls of the counters in it)."
    )
    return 0 if worst <= LIMIT else 1


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", "-n", type=int, default=3000, help="requests measured per phase (3000)")
    parser.add_argument("--partitions", type=int, default=CLUSTER_PARTITIONS, help="STORE_PARTITIONS (24)")
    parser.add_argument("--workers", "-w", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--warmup", type=int, default=200, help="requests before the first reading (200)")
    parser.add_argument("--scripts", action="store_true", help="count script calls by name (MONITOR; costs CPU)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dirs with every process's log")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stop = threading.Event()
    terminate_on_signals(stop)
    try:
        phases = [single(args, stop, 1), single(args, stop, args.partitions), cluster(args, stop)]
    except KeyboardInterrupt:
        print("bench.cluster: interrupted; every process stopped", file=sys.stderr)
        return 130
    return report(args, phases)


if __name__ == "__main__":
    sys.exit(main())
