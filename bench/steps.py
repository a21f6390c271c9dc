"""What each step of web's two hot paths costs: a signed, matched callback and a submission.

Web's app in this process (gevent monkey-patched, as under gunicorn), an embedded Redis
beside it; no HTTP server. Each step is timed over the same batch of prepared requests,
the steps taking turns round after round, and each step's least CPU per request over the
rounds is printed (noise only ever adds): the whole request through receiver/front.py, and
the steps inside it, against a no-op Flask view's whole request. What gunicorn adds per
request (parsing, the environ, the write, a connection's accept and close) is not here: bench
ingest measures it, over kept-alive and fresh connections.

  python -m bench.steps [--requests N] [--rounds R]
"""

from __future__ import annotations

import gevent.monkey

gevent.monkey.patch_all()

import argparse  # noqa: E402  (after the monkey-patching, as under gunicorn)
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from werkzeug.test import EnvironBuilder  # noqa: E402
from werkzeug.wrappers import Request  # noqa: E402

from bench.harness import API_KEY, AUTH_TOKEN  # noqa: E402
from local.redis_server import RedisServer  # noqa: E402

PUBLIC_URL = "http://127.0.0.1:8000"
SUBMISSION = {"method": "POST", "path": "Message/", "params": {"src": "14155550100", "dst": "14155550101", "text": "b"}}


def app_environment(redis_url: str) -> dict[str, str]:
    """Web's settings as the benches' stacks have them; the upstream (port 9) is never called."""
    from local.stack import app_env

    return app_env(
        {},
        redis_url,
        API_KEY,
        9,
        AUTH_TOKEN,
        PUBLIC_URL=PUBLIC_URL,
        RATE_LIMIT_API="100000/1",
        RATE_LIMIT_CALLS="100000/1",
    )


class Steps:
    def __init__(self, redis_url: str) -> None:
        os.environ.update(app_environment(redis_url))
        from flask import Flask

        from receiver import create_app
        from store.connection import connect
        from store.outbox import Outbox
        from store.records import Requests

        self.app = create_app()
        self.svc = self.app.extensions["answerback"]
        self.redis = connect(redis_url)
        self.requests, self.outbox = Requests(self.redis, 3600), Outbox(self.redis, 3600, max_drainers=1)
        self.noop = Flask("noop")
        self.noop.post("/callbacks/plivo")(lambda: {"outcome": "noop"})

    def sent_requests(self, n: int) -> list[tuple[str, str]]:
        """(request id, api_id) of n requests sent upstream, as a worker leaves them."""
        from store.records import Submission

        for _ in range(n):
            self.requests.submit(Submission("bench", "POST", "Message/", {"text": "b"}, "POST", 60))
        sent = []
        while claimed := self.outbox.claim("bench", {"api": 500}, [], may_leave=False).items:
            for item in claimed:
                self.outbox.mark_sending(item)
                api_id = str(uuid.uuid4())
                self.outbox.register_api_id(item.rid, api_id, 60)
                sent.append((item.rid, api_id))
        return sent

    @staticmethod
    def callback(rid: str, api_id: str) -> dict[str, Any]:
        """The WSGI environ of a signed JSON callback as the sandbox (and Plivo) sends it."""
        from sandbox.signing import signature_headers

        url = f"{PUBLIC_URL}/callbacks/plivo?rid={rid}"
        body = {"api_id": api_id, "message_uuid": str(uuid.uuid4()), "status": "delivered", "to": "14155550101"}
        headers = [("Content-Type", "application/json"), *signature_headers(AUTH_TOKEN, "POST", url, body).items()]
        return EnvironBuilder(
            path="/callbacks/plivo",
            query_string=f"rid={rid}",
            method="POST",
            data=json.dumps(body),
            headers=headers,
            base_url=PUBLIC_URL,
        ).get_environ()

    @staticmethod
    def submission() -> dict[str, Any]:
        headers = [("Authorization", f"Bearer {API_KEY}"), ("Content-Type", "application/json")]
        return EnvironBuilder(
            path="/v1/requests", method="POST", data=json.dumps(SUBMISSION), headers=headers, base_url=PUBLIC_URL
        ).get_environ()

    def round(self, n: int) -> dict[str, float]:
        """Microseconds of CPU per request of each step, over n requests each."""
        from receiver import callbacks

        svc, wsgi = self.svc, self.app.wsgi_app
        status: list[str] = []

        def record_status(line: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], object]:
            status.append(line)
            return len

        start_response: Any = record_status  # a WSGI start_response

        def fresh_callbacks() -> list[dict[str, Any]]:
            return [self.callback(rid, api_id) for rid, api_id in self.sent_requests(n)]

        found: dict[str, float] = {}
        found["callback: the whole request (receiver/front.py)"] = per_request(
            fresh_callbacks(), lambda e: list(wsgi(e, start_response))
        )
        requests = [Request(e) for e in fresh_callbacks()]
        found["  read the body (JSON)"] = per_request(requests, callbacks._read_delivery)
        requests = [Request(e) for e in fresh_callbacks()]
        found["  check the signature (V3), body read included"] = per_request(
            requests, lambda r: callbacks._check_signature(svc, r, callbacks._read_delivery(r)[1])
        )
        requests = [Request(e) for e in fresh_callbacks()]
        deliveries: list[dict[str, Any]] = []
        found["  check(): body, signature, rid, api_id"] = per_request(
            requests, lambda r: deliveries.append(callbacks.check(svc, r))
        )
        found["  keep(): match_callback, one round trip"] = per_request(deliveries, lambda d: callbacks.keep(svc, d))
        found["    of it, the round trip of a script doing nothing"] = self.empty_script(n)
        found["    Redis's own CPU in match_callback"] = self.redis_usec(n)
        found["no-op Flask view: the whole request"] = per_request(
            [self.callback(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(n)],
            lambda e: list(self.noop.wsgi_app(e, start_response)),
        )
        found["submission: the whole request (receiver/front.py)"] = per_request(
            [self.submission() for _ in range(n)], lambda e: list(wsgi(e, start_response))
        )
        found["  Redis's own CPU in submit"] = self.redis_usec(n, submissions=True)
        bad = [s for s in status if not s.startswith(("200", "202"))]
        if bad:
            raise RuntimeError(f"unexpected answers: {bad[:3]}")
        return found

    def empty_script(self, n: int) -> float:
        from store.redis_internals import evalsha

        sha = self.redis.script_load("return 1")
        return per_request(range(n), lambda _: evalsha(self.redis, sha, "k", (), False))

    def redis_usec(self, n: int, submissions: bool = False) -> float:
        """Redis's own time per match_callback (or submit) script, by INFO commandstats around n of them."""
        from store.records import Submission

        sent = [] if submissions else self.sent_requests(n)
        before = self.redis.info("commandstats")["cmdstat_evalsha"]
        if submissions:
            for _ in range(n):
                self.requests.submit(Submission("bench", "POST", "Message/", {"text": "b"}, "POST", 60))
        for rid, api_id in sent:
            self.svc.deliveries.store(rid, api_id, {"api_id": api_id}, "POST", "v3:" + str(uuid.uuid4()))
        after = self.redis.info("commandstats")["cmdstat_evalsha"]
        return float(after["usec"] - before["usec"]) / max(1, after["calls"] - before["calls"])


def per_request(items: Iterable[Any], step: Callable[[Any], object]) -> float:
    items = list(items)
    started = time.thread_time()
    for item in items:
        step(item)
    return (time.thread_time() - started) / max(1, len(items)) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.steps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", "-n", type=int, default=300, help="requests per step and round (300)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; each step's least is printed (7)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="answerback-steps-") as tmp:
        redis = RedisServer(Path(tmp) / "redis").start()
        try:
            steps = Steps(redis.url)
            steps.round(50)  # warm: scripts loaded, connections open
            rounds = [steps.round(args.requests) for _ in range(args.rounds)]
        finally:
            from store.metrics import flush_observations

            flush_observations()  # the webhook's latencies, while Redis is still there to take them
            redis.stop()
    print(f"bench.steps  CPU µs per request, least of {args.rounds} rounds of {args.requests} (web's own process)")
    for name in rounds[0]:
        values = sorted(r[name] for r in rounds)
        print(f"{name:<52} {values[0]:7.1f}   (median {values[len(values) // 2]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
