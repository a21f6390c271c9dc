"""CPU per Redis command in a gevent process (as web runs): the project's client against redis-py's own.

store/connection.py gives every client a parser (`Parser`) whose check before each command
(anything unread on a pooled connection?) is one real poll(0), where redis-py's goes through
gevent's select.poll (a trip through the hub and a Timeout). Both clients, otherwise alike
(a BlockingConnectionPool as web's), take turns in one gevent-patched process against an
embedded Redis: R rounds of N PINGs each, and the figure is each one's least CPU per command
over the rounds (the machine's noise only ever adds).

  python -m bench.redis_client [--rounds 20] [--commands 500]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # not bench.harness's: importing it imports redis before gevent patches


def measure(rounds: int, commands: int) -> int:
    from gevent import monkey

    monkey.patch_all()
    import tempfile
    import time

    from redis import BlockingConnectionPool, Redis
    from redis._parsers import _HiredisParser

    from local.redis_server import RedisServer, free_port
    from store.redis_internals import Parser

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), port=free_port()).start()
        try:
            clients = {
                name: Redis(
                    connection_pool=BlockingConnectionPool.from_url(
                        server.url, max_connections=64, parser_class=parser, decode_responses=True, socket_timeout=5
                    )
                )
                for name, parser in (("answerback", Parser), ("redis-py", _HiredisParser))
            }
            best = dict.fromkeys(clients, float("inf"))
            for _ in range(rounds):
                for name, client in clients.items():
                    start = time.process_time()
                    for _ in range(commands):
                        client.ping()
                    best[name] = min(best[name], (time.process_time() - start) * 1e6 / commands)
        finally:
            server.stop()
    print(
        f"RATIO CPU per command answerback : redis-py = {best['answerback'] / best['redis-py']:.2f}   "
        f"({best['answerback']:.1f} us : {best['redis-py']:.1f} us; least of {rounds} rounds "
        f"of {commands} PINGs, gevent)"
    )
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_client", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return measure(args.rounds, args.commands)
    # gevent must patch before anything else is imported: a process of its own
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.redis_client",
            "--child",
            "--rounds",
            str(args.rounds),
            "--commands",
            str(args.commands),
        ],
        cwd=ROOT,
    ).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
