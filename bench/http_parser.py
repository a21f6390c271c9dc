"""CPU to parse one callback's HTTP request in gunicorn: its C parser (gunicorn-h1c) against its Python one.

requirements.txt installs gunicorn-h1c and gunicorn uses it by itself (`http_parser`
"auto"). Both parsers, in one process taking turns, read the same signed JSON callback
(request line, Plivo's headers, a 150-byte body) from an in-memory socket, R rounds of N
requests each; the figure is each one's least CPU per request over the rounds.

  python -m bench.http_parser [--rounds 10] [--requests 2000]
"""

from __future__ import annotations

import argparse
import io
import sys
import time

from gunicorn.config import Config
from gunicorn.http.parser import RequestParser

CALLBACK = (
    b"POST /callbacks/plivo?rid=0190b3f2-7a1c-7cde-8f00-123456789abc HTTP/1.1\r\n"
    b"Host: answerback.example.com\r\nContent-Type: application/json\r\nContent-Length: 150\r\n"
    b"User-Agent: PlivoWebhook/1.0\r\nX-Plivo-Signature-V3: dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZQ==\r\n"
    b"X-Plivo-Signature-V3-Nonce: 12345678901234567890\r\nAccept-Encoding: gzip\r\n\r\n" + b"x" * 150
)


class _Socket:
    def __init__(self) -> None:
        self._data = io.BytesIO(CALLBACK)

    def recv(self, n: int) -> bytes:
        return self._data.read(n)


def _least_us(parser: str, rounds: int, requests: int) -> float:
    cfg = Config()
    cfg.set("http_parser", parser)
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(requests):
            next(RequestParser(cfg, _Socket(), ("127.0.0.1", 40000))).body.read()
        best = min(best, (time.process_time() - start) * 1e6 / requests)
    return best


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_parser", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args(argv)
    python, fast = (_least_us(p, args.rounds, args.requests) for p in ("python", "fast"))
    print(
        f"RATIO CPU per request parsed gunicorn-h1c : Python parser = {fast / python:.2f}   "
        f"({fast:.1f} us : {python:.1f} us; least of {args.rounds} rounds of {args.requests})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
