"""Delivery of callbacks the way Plivo delivers them.

Connect timeout 2 s, read timeout 40 s, one retry on a connect or read timeout
only; any answer, whatever its status, ends the delivery. A small pool of
threads sends them, each on a libcurl handle of its own (pycurl) that keeps its
keep-alive connection; delayed deliveries wait in one Timer. Plivo itself delivers each
callback on a connection of its own: the `fresh_connection` fault does that (a new
connection, closed once the answer came), the cost a receiver pays in production.

pycurl rather than httpx or urllib3, as workers/upstream.py: the sandbox shares the
bench's cores with Answerback, and with those clients most of a callback's CPU went to
the pool and http.client's parsing of the answer's headers (bench/README.md, "The
harness's clients"): CPU that real Plivo spends on its own machines. What is left is
mostly the SDK's signing. libcurl neither follows redirects here nor retries, except in one case it
does by itself: a request on a reused connection that died before any answer goes
again on a fresh one. A POST's body is handed over by a read function that cannot
rewind, so a POST is never sent twice that way (that delivery fails); a GET callback,
which has no body, may be. A connection is reused while it has been idle less than
libcurl's 118 s (CURLOPT_MAXAGE_CONN's default), below web's 120 s keep-alive.
The URL goes out as `callback.as_sent` wrote it (and signed it): libcurl sends it as
given (dot segments too, CURLOPT_PATH_AS_IS).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pycurl

from sandbox.callback import Callback, Outgoing
from sandbox.faults import Fault
from sandbox.options import Config
from sandbox.stats import Stats
from sandbox.timer import Timer
from sandbox.visit import rid_of

log = logging.getLogger(__name__)

THREADS = 16
USER_AGENT = "PlivoSandbox/1.0 (Answerback)"
# libcurl's error codes by name, for the stats (pycurl.E_COULDNT_CONNECT is 7)
CURL_ERRORS = {
    value: name[2:]
    for name, value in vars(pycurl).items()
    if name.startswith("E_") and not name.startswith(("E_MULTI_", "E_SHARE_")) and isinstance(value, int)
}


@dataclass(frozen=True)
class Timeouts:
    """Seconds to connect, and to wait for the answer once connected."""

    connect: float
    read: float


PLIVO = Timeouts(connect=2.0, read=40.0)


class DeliveryError(Exception):
    """A delivery attempt that got no answer; `name` is what the stats count it under:
    CONNECT_TIMEOUT, READ_TIMEOUT, or libcurl's name of the error (COULDNT_CONNECT, GOT_NOTHING...)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    @property
    def timed_out(self) -> bool:
        return self.name in ("CONNECT_TIMEOUT", "READ_TIMEOUT")


class Courier:
    def __init__(self, config: Config, stats: Stats, threads: int = THREADS, timeouts: Timeouts = PLIVO):
        """`timeouts` are Plivo's unless a test needs them short."""
        self._config = config
        self._stats = stats
        self._timeouts = timeouts
        # Early callbacks are sent from the API's own threads too: each thread has a handle.
        self._handles = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sandbox-courier")
        self._timer = Timer(lambda item: self._pool.submit(self.deliver, *item))

    def dispatch(self, callback: Callback, plan: DeliveryPlan) -> None:
        if plan.dropped:
            self._stats.callback_dropped()
        if plan.early:
            self.deliver_now(callback, plan.fresh)
        for delay in plan.delays:
            self.deliver_later(callback, delay, plan.fresh)

    def deliver_later(self, callback: Callback, delay: float, fresh: bool = False) -> None:
        self._stats.callback_planned()
        self._timer.add(delay, (callback, fresh))

    def deliver_now(self, callback: Callback, fresh: bool = False) -> None:
        """Deliver in the caller's thread (an early callback beats the API's own answer)."""
        self._stats.callback_planned()
        self.deliver(callback, fresh)

    def deliver(self, callback: Callback, fresh: bool = False) -> None:
        """One delivery, counted whatever happens: a pool thread must never fail silently.
        `fresh`: on a new connection, closed after the answer."""
        status, error = None, None
        try:
            status = self._send(callback, fresh)
        except DeliveryError as failure:
            error = failure.name
        except Exception as failure:
            log.exception("callback to %s could not be sent", callback.target.url)
            error = type(failure).__name__
        self._stats.callback_finished(status, error, rid_of(callback.target.url), callback.body.get("api_id"))

    def _send(self, callback: Callback, fresh: bool) -> int:
        request = callback.outgoing(self._config.auth_token, self._config.callback_format)
        try:
            return self._attempt(request, fresh)
        except DeliveryError as failure:
            if not failure.timed_out:
                raise
            self._stats.callback_retried()
            return self._attempt(request, fresh)

    def _attempt(self, request: Outgoing, fresh: bool) -> int:
        """The answer's status; its body is read and dropped."""
        curl = getattr(self._handles, "curl", None)
        if curl is None:
            curl = self._handles.curl = pycurl.Curl()
        curl.reset()  # options only: the handle keeps its connection
        curl.setopt(pycurl.URL, request.url)
        curl.setopt(pycurl.PATH_AS_IS, 1)
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.PROXY, "")
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        if fresh:  # a connection of its own, closed after the answer (a kept one stays for the next)
            curl.setopt(pycurl.FRESH_CONNECT, 1)
            curl.setopt(pycurl.FORBID_REUSE, 1)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, int(self._timeouts.connect * 1000))
        curl.setopt(pycurl.TIMEOUT_MS, int((self._timeouts.connect + self._timeouts.read) * 1000))
        headers = {"User-Agent": USER_AGENT, "Expect": "", **request.headers}
        curl.setopt(pycurl.HTTPHEADER, [f"{name}: {value}" if value else f"{name}:" for name, value in headers.items()])
        if request.method == "POST":
            content = request.content or b""
            curl.setopt(pycurl.POST, 1)
            curl.setopt(pycurl.POSTFIELDSIZE, len(content))
            curl.setopt(pycurl.READFUNCTION, io.BytesIO(content).read)  # no seek function: never resent
        curl.setopt(pycurl.WRITEFUNCTION, len)  # the body is not kept
        try:
            curl.perform()
        except pycurl.error as exc:
            code = exc.args[0]
            if code == pycurl.E_OPERATION_TIMEDOUT:
                sent = curl.getinfo(pycurl.REQUEST_SIZE)
                raise DeliveryError("READ_TIMEOUT" if sent else "CONNECT_TIMEOUT") from None
            raise DeliveryError(CURL_ERRORS.get(code, f"curl error {code}")) from None
        return curl.getinfo(pycurl.RESPONSE_CODE)


@dataclass(frozen=True)
class DeliveryPlan:
    """How many copies of a callback go out, and when, after the faults had their say."""

    early: bool = False
    delays: tuple[float, ...] = ()
    dropped: bool = False
    fresh: bool = False  # each copy on a connection of its own

    @classmethod
    def from_faults(cls, fired: Mapping[str, Fault], default_delay: float) -> DeliveryPlan:
        if "drop_callback" in fired:
            return cls(dropped=True)
        early = "early_callback" in fired
        copies = 2 if "duplicate_callback" in fired else 1
        delay = fired.get("callback_delay")
        delays = tuple(delay.draw_seconds() if delay else default_delay for _ in range(copies - early))
        return cls(early, delays, fresh="fresh_connection" in fired)
