"""One process of a split baseline (bench.throughput --baseline-procs P).

  python -m bench.upstream_driver URL N THREADS BODY_JSON

Opens its THREADS keep-alive connections (one warm-up request each), prints
"ready", waits for a line on stdin, then POSTs BODY_JSON to URL N times from
THREADS threads and prints {"ok": answered 200, "seconds": elapsed} as JSON.
Shaped like one worker process (C threads on one httpx client), so a baseline
of W such processes is not held back by one client process's GIL.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx

from bench.harness import AUTH_ID, AUTH_TOKEN


def main(argv: list[str]) -> int:
    url, n, threads, body = argv[0], int(argv[1]), int(argv[2]), json.loads(argv[3])
    from bench.throughput import run_pool

    stop = threading.Event()
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with httpx.Client(
        auth=(AUTH_ID, AUTH_TOKEN), limits=limits, timeout=30, headers={"User-Agent": "answerback/1"}
    ) as client:

        def one(_: int) -> bool:
            return client.post(url, json=body).status_code == 200

        run_pool(threads, threads, one, stop)
        print("ready", flush=True)
        if not sys.stdin.readline():
            return 1
        started = time.perf_counter()
        results = run_pool(n, threads, one, stop)
        seconds = time.perf_counter() - started
    print(json.dumps({"ok": sum(1 for r in results if r is True), "seconds": seconds}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
