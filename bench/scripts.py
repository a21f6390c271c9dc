"""What Redis spends inside the four scripts of one completed request, against an empty script.

An embedded Redis with every script of store/scripts.py loaded, as a running deployment has
them. Each round submits N requests (`submit`), claims them, marks them sending
(`mark_sending`), registers their api_id (`register_api_id`) and delivers each one signed,
matched JSON callback (`match_callback`), through the store's own classes; Redis's own time
per call of each script comes from INFO commandstats around its phase. The baseline, in the
same rounds, is a script that only returns: what any script call costs Redis. Each figure's
least over the rounds is printed (noise only ever adds), with its median. What web and the
workers spend around the calls is not here: bench steps and bench throughput measure that.

  python -m bench.scripts [--requests N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from redis import Redis

from local.redis_server import RedisServer
from store.deliveries import Deliveries
from store.outbox import Outbox
from store.records import Requests, Submission
from store.scripts import NAMES, source

LIFE = ("submit", "mark_sending", "register_api_id", "match_callback")
PARAMS = {"src": "14155550100", "dst": "14155550101", "text": "b"}


class Phases:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        for name in NAMES:
            redis.script_load(source(name))
        self.empty = redis.script_load("return 1")
        self.requests, self.outbox = Requests(redis, 3600), Outbox(redis, 3600, max_drainers=1)
        self.deliveries = Deliveries(redis, 3600, 3600)

    def evalsha(self) -> tuple[int, int]:
        """Redis's microseconds inside EVALSHA so far, and its calls."""
        stats = self.redis.info("commandstats").get("cmdstat_evalsha", {"usec": 0, "calls": 0})
        return int(stats["usec"]), int(stats["calls"])

    def round(self, n: int) -> dict[str, float]:
        """Redis's µs per call of each script over n requests, and of the empty script."""
        found: dict[str, float] = {}

        def phase(name: str, run: Callable[[], object]) -> None:
            usec, calls = self.evalsha()
            run()
            after_usec, after_calls = self.evalsha()
            found[name] = (after_usec - usec) / max(1, after_calls - calls)

        sub = Submission("bench", "POST", "Message/", PARAMS, "POST", 60)
        phase("submit", lambda: [self.requests.submit(sub) for _ in range(n)])
        items = []
        while claimed := self.outbox.claim("bench", {"api": 500}, [], may_leave=False).items:
            items += claimed
        phase("mark_sending", lambda: [self.outbox.mark_sending(item) for item in items])
        sent = [(item.rid, str(uuid.uuid4())) for item in items]
        phase("register_api_id", lambda: [self.outbox.register_api_id(rid, api_id, 60) for rid, api_id in sent])
        body = {"status": "delivered", "to": "14155550101"}
        phase(
            "match_callback",
            lambda: [
                self.deliveries.store(rid, api_id, {"api_id": api_id, **body}, "POST", "v3:" + str(uuid.uuid4()))
                for rid, api_id in sent
            ],
        )
        phase("empty script", lambda: [self.redis.evalsha(self.empty, 0) for _ in range(n)])
        return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scripts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", "-n", type=int, default=300, help="requests per round (300)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; each figure's least is printed (7)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="answerback-scripts-") as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            phases = Phases(Redis.from_url(server.url, decode_responses=True))
            phases.round(50)  # warm
            rounds = [phases.round(args.requests) for _ in range(args.rounds)]
        finally:
            server.stop()
    least = {name: min(r[name] for r in rounds) for name in rounds[0]}
    median = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
    life = sum(least[name] for name in LIFE)
    print(f"bench.scripts  Redis µs per call, least of {args.rounds} rounds of {args.requests} (median)")
    print(f"RATIO one request's four scripts : four empty script calls = {life / (4 * least['empty script']):.1f}")
    for name in (*LIFE, "empty script"):
        print(f"  {name:<18} {least[name]:7.1f}   ({median[name]:.1f})")
    print(f"  {'the four in all':<18} {life:7.1f}   ({sum(median[name] for name in LIFE):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
