"""Delivery of callbacks the way Plivo delivers them.

Connect timeout 2 s, read timeout 40 s, one retry on a connect or read timeout
only; any answer, whatever its status, ends the delivery. A small pool of
threads shares one pooled HTTP client; delayed deliveries wait in one Timer.

urllib3 rather than httpx, as workers/upstream.py: the sandbox shares the bench's
cores with Answerback, and with httpx a callback cost it about 1.2 ms of CPU, half
of it httpx's own (its pool scans every connection per request, its URL and header
checks): CPU that real Plivo spends on its own machines. The rest is mostly the
SDK's signing and http.client's parsing of the answer's headers. urllib3 neither retries nor follows redirects
here: the retry rule above is the only one. A pooled connection is kept until the
receiver closes it (urllib3 checks it is still open before reusing it), not
expired after 5 s idle as httpx did.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError

from sandbox.callback import Callback, Outgoing
from sandbox.config import Config
from sandbox.faults import Fault
from sandbox.stats import Stats
from sandbox.timer import Timer
from sandbox.visit import rid_of

log = logging.getLogger(__name__)

TIMEOUT = urllib3.Timeout(connect=2.0, read=40.0)
THREADS = 16
USER_AGENT = "PlivoSandbox/1.0 (Answerback)"


class Courier:
    def __init__(self, config: Config, stats: Stats, threads: int = THREADS, timeout: urllib3.Timeout = TIMEOUT):
        """`timeout` is Plivo's unless a test needs its timeouts short."""
        self._config = config
        self._stats = stats
        # Early callbacks are sent from the API's own threads too: beyond `maxsize`
        # a connection is opened anyway (block=False) and closed after use.
        self._client = urllib3.PoolManager(maxsize=threads, block=False, retries=False, timeout=timeout)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sandbox-courier")
        self._timer = Timer(lambda callback: self._pool.submit(self.deliver, callback))

    def dispatch(self, callback: Callback, plan: DeliveryPlan) -> None:
        if plan.dropped:
            self._stats.callback_dropped()
        if plan.early:
            self.deliver_now(callback)
        for delay in plan.delays:
            self.deliver_later(callback, delay)

    def deliver_later(self, callback: Callback, delay: float) -> None:
        self._stats.callback_planned()
        self._timer.add(delay, callback)

    def deliver_now(self, callback: Callback) -> None:
        """Deliver in the caller's thread (an early callback beats the API's own answer)."""
        self._stats.callback_planned()
        self.deliver(callback)

    def deliver(self, callback: Callback) -> None:
        """One delivery, counted whatever happens: a pool thread must never fail silently."""
        status, error = None, None
        try:
            status = self._send(callback)
        except HTTPError as failure:
            error = type(failure).__name__
        except Exception as failure:
            log.exception("callback to %s could not be sent", callback.target.url)
            error = type(failure).__name__
        self._stats.callback_finished(status, error, rid_of(callback.target.url), callback.body.get("api_id"))

    def _send(self, callback: Callback) -> int:
        request = callback.outgoing(self._config.auth_token, self._config.callback_format)
        try:
            return self._attempt(request)
        except (ConnectTimeoutError, ReadTimeoutError) as failure:
            if isinstance(failure, NewConnectionError):   # refused or unresolved: urllib3 files it under timeouts
                raise
            self._stats.callback_retried()
            return self._attempt(request)

    def _attempt(self, request: Outgoing) -> int:
        """The answer's status; its body is read (the connection goes back to the pool only then), not decoded."""
        response = self._client.urlopen(request.method, request.url, body=request.content,
                                        headers={"User-Agent": USER_AGENT, **request.headers},
                                        redirect=False, decode_content=False)
        return response.status


@dataclass(frozen=True)
class DeliveryPlan:
    """How many copies of a callback go out, and when, after the faults had their say."""

    early: bool = False
    delays: tuple[float, ...] = ()
    dropped: bool = False

    @classmethod
    def from_faults(cls, fired: Mapping[str, Fault], default_delay: float) -> DeliveryPlan:
        if "drop_callback" in fired:
            return cls(dropped=True)
        early = "early_callback" in fired
        copies = 2 if "duplicate_callback" in fired else 1
        delay = fired.get("callback_delay")
        return cls(early, tuple(delay.draw_seconds() if delay else default_delay for _ in range(copies - early)))
