"""Notifications to the application: a thread in every worker process claims due
notifications and POSTs each, signed per Standard Webhooks, from a pool of its
own (never the send threads), with at most NOTIFY_HOST_CONCURRENCY in flight to
one host, so a slow or dead endpoint holds only its own notifications."""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from redis.exceptions import RedisError
from standardwebhooks import Webhook

import logs
from config import Settings
from notify_hosts import HostPolicy, IPAddress, NotAllowed, Target
from store.connection import now_ms
from store.notifications import DueNotification, Notifications
from store.records import RequestRecord, iso
from workers.backoff import parse_retry_after

log = logging.getLogger(__name__)

POLL_S = 0.1
JITTER = 0.1   # each scheduled delay is stretched or shrunk by up to 10 %


def payload(record: RequestRecord) -> bytes:
    """The event: its type names the final status; `data` is the record as GET returns it."""
    body = {"type": f"request.{record.status}", "timestamp": iso(record.fields.get("completed_at")),
            "data": record.to_json()}
    return json.dumps(body, separators=(",", ":")).encode()


class Signer:
    """Standard Webhooks headers; every secret signs, so receivers can rotate."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._hooks = [Webhook(s) for s in secrets]

    def headers(self, msg_id: str, body: bytes) -> dict[str, str]:
        moment = datetime.now(UTC)
        text = body.decode()
        signatures = " ".join(hook.sign(msg_id, moment, text) for hook in self._hooks)
        return {"webhook-id": msg_id, "webhook-timestamp": str(int(moment.timestamp())),
                "webhook-signature": signatures}


@dataclass(frozen=True)
class Answer:
    status: int | None = None     # HTTP status, None when none came
    error: str = ""
    retry_after: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sender:
    """POSTs one notification to the address that was checked, never following redirects
    and never through a proxy (either would reach an address nobody checked)."""

    def __init__(self, settings: Settings) -> None:
        self.policy = HostPolicy.parse(settings.notify_hosts)
        self.signer = Signer(settings.webhook_secrets)
        self.timeout = settings.notify_timeout
        self._local = threading.local()

    @property
    def http(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(
                timeout=httpx.Timeout(self.timeout), follow_redirects=False, trust_env=False,
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
                headers={"User-Agent": "answerback/1", "Content-Type": "application/json"})
        return client

    def post(self, url: str, msg_id: str, body: bytes) -> Answer:
        """Raises NotAllowed when the URL or its address may not be contacted."""
        try:
            target, ip = self.policy.resolve(url)
        except OSError as exc:
            return Answer(error=f"could not resolve the host ({type(exc).__name__})")
        request_url, headers, extensions = _pinned(url, target, ip)
        headers.update(self.signer.headers(msg_id, body))
        try:
            with self.http.stream("POST", request_url, content=body, headers=headers,
                                  extensions=extensions) as answer:
                return Answer(answer.status_code, "" if answer.is_success else f"HTTP {answer.status_code}",
                              answer.headers.get("Retry-After"))
        except httpx.TimeoutException as exc:
            return Answer(error=f"no answer within NOTIFY_TIMEOUT ({type(exc).__name__})")
        except httpx.TransportError as exc:
            return Answer(error=f"could not reach the endpoint ({type(exc).__name__})")


def _pinned(url: str, target: Target, ip: IPAddress) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """The URL with the checked address in place of the name; Host and TLS name stay the name's."""
    original = httpx.URL(url)
    headers = {"Host": original.netloc.decode("ascii")}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" and target.ip is None else {}
    return original.copy_with(host=str(ip)), headers, extensions


def next_delay(schedule: tuple[float, ...], attempts: int, retry_after: str | None,
               rng: random.Random | None = None) -> float | None:
    """Seconds until the next attempt after `attempts` failed ones, or None: give up."""
    if attempts > len(schedule):
        return None
    delay = schedule[attempts - 1] * (rng or random).uniform(1 - JITTER, 1 + JITTER)
    floor = parse_retry_after(retry_after)
    return max(delay, floor) if floor is not None else delay


class Notifier(threading.Thread):
    """Claims due notifications while there is room and sends them on its own pool."""

    def __init__(self, settings: Settings, notifications: Notifications, stopping: threading.Event) -> None:
        super().__init__(name="notifier", daemon=True)
        self.settings = settings
        self.notifications = notifications
        self.stopping = stopping
        self.sender = Sender(settings)
        self.pool = ThreadPoolExecutor(settings.notify_concurrency, thread_name_prefix="notify")

    def run(self) -> None:
        in_flight: dict[Future[None], str] = {}
        while not self.stopping.is_set():
            try:
                self.step(in_flight)
            except Exception:   # the thread must outlive any one failure; leases resend what was lost
                log.exception("notifier step failed")
                self.stopping.wait(1.0)

    def step(self, in_flight: dict[Future[None], str]) -> None:
        """Claim what there is room for, then wait for a send to finish (or for a poll)."""
        claimed = self._claim(in_flight)
        for due in claimed:
            in_flight[self.pool.submit(self.deliver, due)] = due.host
        if not in_flight:
            self.stopping.wait(POLL_S)
            return
        done, _ = wait(in_flight, timeout=0 if claimed else POLL_S, return_when=FIRST_COMPLETED)
        for future in done:
            in_flight.pop(future)
            if future.exception() is not None:
                log.error("notification failed: %s", type(future.exception()).__name__)

    def _claim(self, in_flight: dict[Future[None], str]) -> list[DueNotification]:
        s = self.settings
        wanted = s.notify_concurrency - len(in_flight)
        if wanted <= 0:
            return []
        room = {host: s.notify_host_concurrency - n for host, n in Counter(in_flight.values()).items()}
        try:
            return self.notifications.claim(wanted, room, s.notify_host_concurrency)
        except RedisError as exc:
            log.warning("notifications not claimed: Redis unavailable (%s)", type(exc).__name__)
            return []

    def deliver(self, due: DueNotification) -> None:
        with logs.tagged(request_id=due.rid):
            self._attempt(due)

    def _attempt(self, due: DueNotification) -> None:
        """One attempt. Only the request id, host and outcome are logged: a URL may carry a
        token, and signatures and secrets never leave this function."""
        record = due.record
        body = payload(record)
        started, at = time.monotonic(), iso(str(now_ms()))
        try:
            answer = self.sender.post(record.fields["notify_url"], due.webhook_id, body)
            outcome = "delivered" if answer.delivered else "retry"
        except NotAllowed as exc:
            answer, outcome = Answer(error=str(exc)), "refused"
        attempt = due.attempts + 1
        next_due = 0
        if outcome == "retry":
            delay = next_delay(self.settings.notify_schedule, attempt, answer.retry_after)
            if delay is None:
                outcome = "failed"
            else:
                next_due = now_ms() + int(delay * 1000)
        entry = {"webhook_id": due.webhook_id, "type": f"request.{record.status}", "attempt": attempt,
                 "at": at, "duration_ms": round((time.monotonic() - started) * 1000, 1),
                 "status": answer.status, "outcome": outcome, "error": answer.error or None}
        self.notifications.settle(due, outcome, entry, answer.error, next_due)
        log.log(logging.DEBUG if outcome == "delivered" else logging.INFO,
                "notification %s for request %s to %s attempt %d: %s%s", due.event, due.rid, due.host,
                attempt, outcome, f" ({answer.error})" if answer.error else "")
