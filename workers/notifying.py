"""Notifications to the application: a thread in every worker process claims due
notifications and POSTs each, signed per Standard Webhooks, from a pool of its
own (never the send threads), with at most NOTIFY_HOST_CONCURRENCY in flight to
one host, so a slow or dead endpoint holds only its own notifications."""

from __future__ import annotations

import json
import logging
import math
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx
from redis.exceptions import RedisError
from standardwebhooks import Webhook

import logs
from config import Settings
from notify_hosts import HostPolicy, IPAddress, NotAllowed, Target
from store import keys
from store.connection import now_ms
from store.notifications import DueNotification, Notifications
from store.records import RequestRecord, iso
from workers.backoff import parse_retry_after

log = logging.getLogger(__name__)

POLL_S = 0.1
JITTER = 0.1  # each scheduled delay is stretched or shrunk by up to 10 %


def payload(record: RequestRecord) -> bytes:
    """The event: its type names the final status; `data` is the record as GET returns it."""
    body = {
        "type": f"request.{record.status}",
        "timestamp": iso(record.fields.get("completed_at")),
        "data": record.to_json(),
    }
    return json.dumps(body, separators=(",", ":")).encode()


class Signer:
    """Standard Webhooks headers; every secret signs, so receivers can rotate. A tenant with
    secrets of its own (TENANT_WEBHOOK_SECRETS) is signed with those alone, so that another
    tenant's notification, pointed at its endpoint, does not verify there."""

    def __init__(self, secrets: tuple[str, ...], tenant_secrets: tuple[tuple[str, str], ...] = ()) -> None:
        self._hooks = [Webhook(s) for s in secrets]
        self._tenant_hooks: dict[str, list[Webhook]] = {}
        for name, secret in tenant_secrets:
            self._tenant_hooks.setdefault(keys.named_tenant(name), []).append(Webhook(secret))

    def headers(self, msg_id: str, body: bytes, tenant: str = "") -> dict[str, str]:
        moment = datetime.now(UTC)
        text = body.decode()
        hooks = self._tenant_hooks.get(tenant, self._hooks)
        signatures = " ".join(hook.sign(msg_id, moment, text) for hook in hooks)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signatures,
        }


@dataclass(frozen=True)
class Answer:
    status: int | None = None  # HTTP status, None when none came
    error: str = ""
    retry_after: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Deadline:
    """When the attempt under way must be over (time.monotonic()); every wait of it,
    connect, TLS handshake, each write and each read, is cut short to end by then, so an
    endpoint that trickles bytes (which restarts a per-read timeout) is cut as well."""

    def __init__(self) -> None:
        self.at = math.inf

    def left(self, timeout: float | None, expired: type[Exception]) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise expired("the attempt reached NOTIFY_TIMEOUT")
        return left if timeout is None else min(timeout, left)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, each wait bounded by the attempt's deadline."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self.sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self.sockets.connect_tcp(
            host, port, self.deadline.left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return DeadlineStream(stream, self.deadline)

    def sleep(self, seconds: float) -> None:
        self.sockets.sleep(seconds)


class DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: Deadline) -> None:
        self.stream = stream
        self.deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, self.deadline.left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """One send at a time, each given what is left: a single write of the whole buffer
        would give every partial send the full time again."""
        sock = self.stream.get_extra_info("socket")
        while buffer:
            sock.settimeout(self.deadline.left(timeout, httpcore.WriteTimeout))
            try:
                sent = sock.send(buffer)
            except TimeoutError as exc:
                raise httpcore.WriteTimeout(exc) from exc
            except OSError as exc:
                raise httpcore.WriteError(exc) from exc
            buffer = buffer[sent:]

    def close(self) -> None:
        self.stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        """The handshake as a whole is bounded: the ssl module counts a socket's timeout
        from the handshake's start, not per read."""
        stream = self.stream.start_tls(
            ssl_context, server_hostname, self.deadline.left(timeout, httpcore.ConnectTimeout)
        )
        return DeadlineStream(stream, self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)


class Sender:
    """POSTs one notification to the address that was checked, never following redirects
    and never through a proxy (either would reach an address nobody checked). The whole
    attempt, lookup included, ends within NOTIFY_TIMEOUT, so it is over long before its
    lease (`Settings.notify_lease_ms`) runs out and the event is never sent twice at once."""

    def __init__(self, settings: Settings) -> None:
        self.policy = HostPolicy.parse(settings.notify_hosts)
        self.signer = Signer(settings.webhook_secrets, settings.tenant_webhook_secrets)
        self.timeout = settings.notify_timeout
        self._local = threading.local()

    def _connections(self) -> tuple[httpcore.ConnectionPool, Deadline]:
        """This thread's keep-alive connections, and the deadline their every wait keeps."""
        pool = getattr(self._local, "pool", None)
        if pool is None:
            deadline = self._local.deadline = Deadline()
            pool = self._local.pool = httpcore.ConnectionPool(
                max_connections=4, max_keepalive_connections=4, network_backend=DeadlineBackend(deadline)
            )
        return pool, self._local.deadline

    def post(self, url: str, msg_id: str, body: bytes, tenant: str = "") -> Answer:
        """Raises NotAllowed when the URL or its address may not be contacted."""
        ends = time.monotonic() + self.timeout
        try:
            target, ip = self._resolve(url, ends)
        except TimeoutError:
            return Answer(error="could not resolve the host within NOTIFY_TIMEOUT")
        except OSError as exc:
            return Answer(error=f"could not resolve the host ({type(exc).__name__})")
        request_url, headers, extensions = _pinned(url, target, ip)
        headers.update(self.signer.headers(msg_id, body, tenant))
        pool, deadline = self._connections()
        deadline.at = ends
        try:
            with pool.stream(
                "POST", request_url, headers=list(headers.items()), content=body, extensions=extensions
            ) as answer:
                retry_after = next(
                    (v.decode("latin-1") for k, v in answer.headers if k.lower() == b"retry-after"), None
                )
                success = 200 <= answer.status < 300
                return Answer(answer.status, "" if success else f"HTTP {answer.status}", retry_after)
        except httpcore.TimeoutException as exc:
            return Answer(error=f"no answer within NOTIFY_TIMEOUT ({type(exc).__name__})")
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ConnectionNotAvailable) as exc:
            return Answer(error=f"could not reach the endpoint ({type(exc).__name__})")
        finally:
            deadline.at = math.inf

    def _resolve(self, url: str, ends: float) -> tuple[Target, IPAddress]:
        """The checked address, looked up by the resolver within the deadline. A lookup still
        going then is left to finish on its own thread: it only answers, it sends nothing."""
        if self.policy.check_url(url).ip is not None:
            return self.policy.resolve(url)
        found: Future[tuple[Target, IPAddress]] = Future()

        def lookup() -> None:
            try:
                found.set_result(self.policy.resolve(url))
            except (NotAllowed, OSError) as exc:
                found.set_exception(exc)

        threading.Thread(target=lookup, name="notify-lookup", daemon=True).start()
        return found.result(timeout=max(0.0, ends - time.monotonic()))


def _pinned(url: str, target: Target, ip: IPAddress) -> tuple[httpcore.URL, dict[str, str], dict[str, Any]]:
    """The URL with the checked address in place of the name; Host and TLS name stay the name's."""
    original = httpx.URL(url)
    headers = {
        "Host": original.netloc.decode("ascii"),
        "User-Agent": "answerback/1",
        "Content-Type": "application/json",
    }
    extensions: dict[str, Any] = {"sni_hostname": target.host} if target.scheme == "https" and target.ip is None else {}
    pinned = httpcore.URL(scheme=original.raw_scheme, host=str(ip), port=target.port, target=original.raw_path)
    return pinned, headers, extensions


def next_delay(
    schedule: tuple[float, ...], attempts: int, retry_after: str | None, rng: random.Random | None = None
) -> float | None:
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
            except Exception:  # the thread must outlive any one failure; leases resend what was lost
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
            answer = self.sender.post(record.fields["notify_url"], due.webhook_id, body, record.tenant)
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
        entry = {
            "webhook_id": due.webhook_id,
            "type": f"request.{record.status}",
            "attempt": attempt,
            "at": at,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "status": answer.status,
            "outcome": outcome,
            "error": answer.error or None,
        }
        if next_due:
            entry["next_at"] = iso(str(next_due))
        self.notifications.settle(due, outcome, entry, answer.error, next_due)
        log.log(
            logging.DEBUG if outcome == "delivered" else logging.INFO,
            "notification %s for request %s to %s attempt %d: %s%s",
            due.event,
            due.rid,
            due.host,
            attempt,
            outcome,
            f" ({answer.error})" if answer.error else "",
        )
