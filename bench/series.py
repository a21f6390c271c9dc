"""Redis memory of the figures over time (store/series.py): per scope per day and per week.

Starts an embedded Redis and writes a week of figures for one scope (a tenant, or all
tenants: the same shape) through the scripts' own field layout, for three kinds of minute:

  quiet      one request a minute: submitted, completed in one bucket, one webhook latency
  steady     traffic every minute: submitted, completed over 3 buckets of the time to result,
             webhook latencies over 3 buckets (the shape of a steady load of similar requests)
  busy       all of the above wider: completed over 6 buckets, failed and expired in one each,
             webhook latencies over 6 buckets, callbacks refused and notifications failed
  worst      every field a minute can have (store/series.py FIELDS_PER_MINUTE): the bound

then reads `MEMORY USAGE` of every key it wrote, and prints bytes per day and per week, and
the hashes' encoding. The values written are those of busy traffic (4-digit counts); what a
field costs hardly depends on its value.

  python -m bench.series [--days D]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from redis import Redis

from local.redis_server import RedisServer
from store import keys, series

WEEK_MIN = 7 * 1440


def minute_fields(kind: str) -> list[str]:
    """The fields (without the minute) one minute of `kind` writes."""
    if kind == "worst":
        final = [f"{letter}{n}" for letter in (*series.FINAL, series.WEBHOOK) for n in range(series.SLOTS)]
        return ["s", "r", "n", *final]
    wide = {"quiet": 1, "steady": 3, "busy": 6}[kind]
    fields = ["s", *(f"c{12 + n}" for n in range(wide)), *(f"w{5 + n}" for n in range(wide))]
    if kind == "busy":
        fields += ["f14", "e40", "r", "n"]
    return fields


def fill(redis: Redis, scope: str, kind: str, minutes: int, first_minute: int) -> list[str]:
    names = minute_fields(kind)
    written: set[str] = set()
    with redis.pipeline(transaction=False) as pipe:
        for minute in range(first_minute, first_minute + minutes):
            key = keys.series(scope, minute // series.BLOCK_MINUTES)
            written.add(key)
            for name in names:
                pipe.hincrby(key, f"{minute % series.BLOCK_MINUTES}{name}", 1234)
            pipe.expire(key, series.TTL_S)
            if len(pipe) > 5000:
                pipe.execute()
        pipe.execute()
    return sorted(written)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.series", description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7, help="days written per kind (7)")
    args = parser.parse_args(argv)
    minutes = args.days * 1440
    first = int(time.time()) // 60 // series.BLOCK_MINUTES * series.BLOCK_MINUTES
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            redis = Redis.from_url(server.url, decode_responses=True)
            version = redis.info("server")["redis_version"]
            print(
                f"bench.series  Redis {version}: one scope's figures, {series.BLOCK_MINUTES}-minute blocks, "
                f"kept {series.KEEP_DAYS} days"
            )
            print(f"{'minute kind':<10} {'fields/min':>10} {'B/day':>10} {'B/week':>11}  encoding")
            for kind in ("quiet", "steady", "busy", "worst"):
                written = fill(redis, "t:" + kind, kind, minutes, first)
                used = sum(redis.memory_usage(name, samples=0) or 0 for name in written)
                per_day = used / args.days
                encoding = redis.object("encoding", written[0])
                print(f"{kind:<10} {len(minute_fields(kind)):>10} {per_day:>10,.0f} {per_day * 7:>11,.0f}  {encoding}")
            redis.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
