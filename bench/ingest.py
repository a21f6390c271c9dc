"""The webhook's cost against a no-op Flask view's, over kept-alive and fresh connections.

Starts an embedded Redis, web (gunicorn.conf.py, 2 processes, signatures checked) and the
no-op app (bench/noop_app.py) under the same gunicorn.conf.py. Submits the requests the
callbacks will finish, then, in alternated pairs, drives each server with the same load
(bench/http_load.py in a process of its own, `finish` mode: one signed JSON callback per
request id, C connections, as fast as answers come):

  kept   C kept-alive connections (wrk-style)
  fresh  a new connection per callback, closed once its answer came (as Plivo delivers them)

Every webhook callback is signed and finds its request (outcome `matched`): the production
path. The figures to read are the RATIO webhook/s : no-op/s per connection mode and the
CPU per callback (web + Redis against the no-op's own), alternated pairs so that drift
shows.

  python -m bench.ingest [--callbacks N] [--pairs P] [--connections C]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import AUTH_TOKEN, ROOT, Stack, terminate_on_signals
from bench.waiting import start_noop, submit_all
from config import raise_fd_limit

MODES = ("kept", "fresh")


def drive(stack: Stack, url: str, groups: list[str], rids: Path, connections: int, fresh: bool) -> dict[str, Any]:
    """One run of the load generator: a signed callback per request id in `rids`; the rate
    and the CPU each of `groups` spent per callback."""
    argv = [sys.executable, "-m", "bench.http_load", "finish", url, str(rids), "--connections", str(connections)]
    argv += ["--signed", AUTH_TOKEN] + (["--fresh"] if fresh else [])
    cpu0 = stack.cpu()
    driver = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        result = json.loads(driver.communicate()[0])
        cpu1 = stack.cpu()
    finally:
        driver.kill()
        driver.wait()
    served = sum(result["statuses"].values())
    result["rate"] = served / result["seconds"]
    result["cpu_ms"] = {g: (cpu1[g] - cpu0[g]) * 1000 / max(1, served) for g in groups}
    result["server_ms"] = sum(result["cpu_ms"].values())
    result["load_ms"] = result["cpu_s"] * 1000 / max(1, served)
    return result


def rids_file(stack: Stack, n: int, directory: Path, name: str) -> Path:
    path = directory / name
    path.write_text("\n".join(submit_all(stack, n)) + "\n")
    return path


def line(name: str, r: dict[str, Any]) -> str:
    p50, p99, _ = r["latencies_ms"]
    cpu = "  ".join(f"{g} {v:.3f}" for g, v in r["cpu_ms"].items())
    other = {k: v for k, v in r["statuses"].items() if k != "200"}
    return (
        f"  {name:<16} {r['rate']:7.0f}/s  p50 {p50:5.1f} ms  p99 {p99:6.1f} ms  | CPU ms per callback: {cpu}"
        f"  (load {r['load_ms']:.3f})" + (f"  | non-200: {other}" if other else "")
    )


def report(runs: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]], args: argparse.Namespace) -> None:
    print()
    print(
        f"bench.ingest  {args.callbacks} signed, matched JSON callbacks per run, {args.connections} connections,"
        f" {args.pairs} alternated pairs per mode, web processes {args.web_processes}"
    )
    for mode, pairs in runs.items():
        ratios = [web["rate"] / noop["rate"] for noop, web in pairs]
        cpu = [noop["server_ms"] / web["server_ms"] for noop, web in pairs]
        web_ms = [web["server_ms"] for _, web in pairs]
        noop_ms = [noop["server_ms"] for noop, _ in pairs]
        print(
            f"{mode:<6} RATIO webhook/s : no-op/s = {statistics.median(ratios):.2f}"
            f"  (pairs: {', '.join(f'{r:.2f}' for r in ratios)})"
            f"   CPU no-op : webhook = {statistics.median(cpu):.2f}"
            f"  (web + redis {statistics.median(web_ms):.3f} ms,"
            f" no-op {statistics.median(noop_ms):.3f} ms per callback)"
        )
        for i, (noop, web) in enumerate(pairs):
            print(line(f"no-op #{i + 1}", noop))
            print(line(f"webhook #{i + 1}", web))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--callbacks", "-n", type=int, default=4000, help="callbacks per run (4000)")
    parser.add_argument("--pairs", type=int, default=3, help="alternated no-op/webhook pairs per mode (3)")
    parser.add_argument("--connections", "-c", type=int, default=32, help="connections at a time (32)")
    parser.add_argument("--modes", default=",".join(MODES), help="kept, fresh or both (default both)")
    parser.add_argument("--web-processes", type=int, default=2)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes: choose among {', '.join(MODES)}")
    raise_fd_limit()
    terminate_on_signals()
    extra = dict(item.split("=", 1) for item in args.env)
    runs: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {m: [] for m in modes}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="answerback-ingest-") as tmp,
            Stack(
                workers=0,
                send_concurrency=1,
                web_processes=args.web_processes,
                keep_dir=args.keep_logs,
                extra_env=extra,
            ) as stack,
        ):
            noop_server = start_noop(stack)
            assert noop_server.ready_url is not None
            noop_url = noop_server.ready_url.rsplit("/", 1)[0]
            try:
                warm = rids_file(stack, 500, Path(tmp), "warm")
                for fresh in (False, True):  # connections, scripts, caches
                    drive(stack, noop_url, ["noop"], warm, args.connections, fresh)
                    drive(stack, stack.web_url, ["web", "redis"], warm, args.connections, fresh)
                for i in range(args.pairs):
                    for mode in modes:
                        rids = rids_file(stack, args.callbacks, Path(tmp), f"{mode}-{i}")
                        fresh = mode == "fresh"
                        print(f"{mode} pair {i + 1} ...", file=sys.stderr, flush=True)
                        noop = drive(stack, noop_url, ["noop"], rids, args.connections, fresh)
                        web = drive(stack, stack.web_url, ["web", "redis"], rids, args.connections, fresh)
                        runs[mode].append((noop, web))
            finally:
                noop_server.stop()
    except KeyboardInterrupt:
        return 130
    report(runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
