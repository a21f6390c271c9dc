"""A small HTTP/1.1 load generator on raw asyncio streams (no per-request client objects), so that
a Python client on the same cores costs as little CPU as it can.

  python -m bench.http_load closed URL PATH --connections 32 --seconds 10 [--signed TOKEN]
      each of C keep-alive connections POSTs a fresh JSON callback (a new api_id every time)
      to PATH as soon as its last answer came back, for S seconds (a fixed load, like
      `wrk -c C`); prints {"n", "seconds", "statuses", "latencies_ms": [p50, p99, max]}.
  python -m bench.http_load finish URL RIDS_FILE --connections 32 --rate R [--signed TOKEN]
      one callback for each request id in RIDS_FILE (one a line) on C connections, R a
      second at most (0: as fast as answers come); prints the same figures.
  --fresh: every request on a new connection, closed by the client once its answer came
      (as Plivo delivers callbacks), instead of C kept-alive ones.

Also the library the waiting bench uses in-process: `hold` keeps one connection per waiter.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from config import raise_fd_limit


@dataclass
class Answer:
    status: int
    headers: bytes
    body: bytes


def callback_body(api_id: str) -> dict[str, str]:
    """A Plivo-shaped delivery with a fresh api_id (so every one is stored, none a duplicate)."""
    return {"api_id": api_id, "message": "call fired", "request_uuid": str(uuid.uuid4()), "status": "completed"}


def request_bytes(method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def callback_request(url: str, signed_with: str = "") -> bytes:
    """One JSON callback to `url` (unsigned, or signed as Plivo signs with token `signed_with`)."""
    body = callback_body(str(uuid.uuid4()))
    headers = {"Content-Type": "application/json"}
    if signed_with:
        from sandbox.signing import signature_headers

        headers |= signature_headers(signed_with, "POST", url, body)
    return request_bytes("POST", url, json.dumps(body).encode(), headers)


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return Answer(int(head[9:12]), head, await reader.readexactly(length) if length else b"")


async def _connection(
    host: str | None,
    port: int | None,
    next_request: Callable[[], tuple[bytes, float] | None],
    latencies: list[float],
    statuses: dict[int, int],
    bodies: list[bytes] | None,
    fresh: bool = False,
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while (turn := next_request()) is not None:
            request, due = turn
            if (early := due - time.perf_counter()) > 0:
                await asyncio.sleep(early)
            if reader is None or writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            started = time.perf_counter()
            writer.write(request)
            answer = await read_answer(reader)
            latencies.append(time.perf_counter() - started)
            statuses[answer.status] = statuses.get(answer.status, 0) + 1
            if bodies is not None:
                bodies.append(answer.body)
            if fresh or b"connection: close" in answer.headers.lower():
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def drive(
    url: str,
    requests: Iterator[bytes],
    connections: int,
    seconds: float | None = None,
    bodies: list[bytes] | None = None,
    rate: float = 0.0,
    fresh: bool = False,
) -> dict[str, Any]:
    """Send `requests` over `connections` keep-alive connections, each waiting for its answer
    before the next; stop when they run out or after `seconds`. Answer bodies go to `bodies`.
    `rate` > 0: no faster than that many per second, evenly spaced (a steady stream of
    callbacks rather than as many as the server can take). `fresh`: a new connection for
    every request, closed once its answer came (C of them at a time)."""
    parts = urlsplit(url)
    started = time.perf_counter()
    deadline = started + seconds if seconds else None
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent = itertools.count()

    def next_request() -> tuple[bytes, float] | None:
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        request = next(requests, None)
        due = started + next(sent) / rate if rate > 0 else 0.0
        return None if request is None else (request, due)

    await asyncio.gather(
        *(
            _connection(parts.hostname, parts.port, next_request, latencies, statuses, bodies, fresh)
            for _ in range(connections)
        )
    )
    return figures(latencies, statuses, time.perf_counter() - started)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def figures(latencies: list[float], statuses: dict[int, int], seconds: float) -> dict[str, Any]:
    ms = [v * 1000 for v in latencies]
    return {
        "n": len(ms),
        "seconds": seconds,
        "statuses": statuses,
        "latencies_ms": [percentile(ms, 0.5), percentile(ms, 0.99), max(ms, default=0.0)],
    }


async def hold(url: str, requests: list[bytes], opening: int = 500) -> list[tuple[float, Answer | None]]:
    """One connection per request, all open at once (opened `opening` at a time so the
    listen backlog never overflows); answers (wall-clock time it came, answer) in order."""
    parts = urlsplit(url)
    results: list[tuple[float, Answer | None]] = [(0.0, None)] * len(requests)
    sent = asyncio.Semaphore(opening)

    async def one(i: int, request: bytes) -> None:
        async with sent:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            writer.write(request)
            await writer.drain()
        try:
            answer = await read_answer(reader)
            results[i] = (time.time(), answer)
        except (OSError, asyncio.IncompleteReadError):
            results[i] = (time.time(), None)
        finally:
            writer.close()

    await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_load")
    parser.add_argument("mode", choices=["closed", "finish"])
    parser.add_argument("url", help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("what", help="closed: the path to POST to; finish: a file of request ids")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0, help="finish: callbacks per second (0: no limit)")
    parser.add_argument("--signed", default="", metavar="TOKEN", help="sign callbacks with this auth token")
    parser.add_argument("--fresh", action="store_true", help="a new connection per request (closed after it)")
    args = parser.parse_args(argv)
    raise_fd_limit()
    if args.mode == "closed":
        requests = (callback_request(args.url + args.what, args.signed) for _ in itertools.count())
        result = asyncio.run(drive(args.url, requests, args.connections, args.seconds, fresh=args.fresh))
    else:
        with open(args.what) as f:
            rids = [line.strip() for line in f if line.strip()]
        requests = (callback_request(f"{args.url}/callbacks/plivo?rid={rid}", args.signed) for rid in rids)
        result = asyncio.run(drive(args.url, requests, args.connections, rate=args.rate, fresh=args.fresh))
    result["cpu_s"] = sum(os.times()[:2])
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
