"""Who is alive, and whether they agree: every web and worker process publishes a heartbeat
in Redis (its kind, host and pid, its queue, a fingerprint of the settings every process must
share, and its clock's offset from Redis's `TIME`), so that any process can tell an operator
that no worker runs, that two processes were given different settings, or that a clock is off.

A heartbeat is one pipelined write every HEARTBEAT_S (a zset of process ids by the Redis time
of their last beat, and a hash of what each published); a process silent for STALE_S counts as
gone and the next beat of any process deletes it. Reading everything is one pipeline too.
Times are Redis's (`TIME`), so a machine's skewed clock neither hides nor invents a process.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from config import Settings, declarations
from store import keys

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
STALE_S = 3 * HEARTBEAT_S
WEB, WORKER = "web", "worker"

# Settings every process must be given alike: they decide how a request is sent, signed,
# checked, timed and kept, so a web and a worker (or two webs) that differ in one of them
# answer the same request differently. Per-process tuning (ports, concurrency, pools, logs,
# the spool) is left out, and so is API_KEYS (a key rotation rolls across webs one at a time).
FINGERPRINTED = (
    "public_url",
    "plivo_auth_id",
    "plivo_auth_token",
    "plivo_main_auth_token",
    "plivo_api_url",
    "plivo_timeout",
    "max_attempts",
    "rate_limit_calls",
    "rate_limit_api",
    "accept_v2_signatures",
    "callback_method",
    "callback_timeout",
    "max_callback_timeout",
    "result_ttl",
    "orphan_ttl",
    "replay_window",
    "queue_name",
    "drain_seconds",
    "lease_seconds",
    "drainer_stale_seconds",
    "notify_hosts",
    "webhook_secrets",
    "tenant_webhook_secrets",
    "notify_schedule",
)
# A secret's digest is slow to compute (once per process), so that its short form cannot be
# turned back into a weak secret by trying candidates.
SECRET_ROUNDS = 100_000
DIGEST_CHARS = 12


def setting_digests(settings: Settings) -> dict[str, str]:
    """Variable name -> a short digest of its value, for every FINGERPRINTED setting. Never a
    value: secrets (the fields kept out of the settings' repr) go through PBKDF2."""
    secret = {f.name for f in fields(Settings) if not f.repr}
    named = declarations()
    digests = {}
    for name in FINGERPRINTED:
        value = json.dumps(getattr(settings, name)).encode()
        if name in secret:
            digest = hashlib.pbkdf2_hmac("sha256", value, b"answerback:" + name.encode(), SECRET_ROUNDS).hex()
        else:
            digest = hashlib.sha256(value).hexdigest()
        digests[named[name].variable] = digest[:DIGEST_CHARS]
    return digests


def fingerprint(digests: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:DIGEST_CHARS]


@dataclass(frozen=True)
class Durability:
    """Redis's persistence as `CONFIG GET` reports it; None where the provider forbids CONFIG."""

    appendonly: str | None
    maxmemory_policy: str | None

    @property
    def durable(self) -> bool | None:
        """A restart keeps every acknowledged write (AOF) and nothing is evicted (noeviction)."""
        if self.appendonly is None or self.maxmemory_policy is None:
            return None
        return self.appendonly == "yes" and self.maxmemory_policy == "noeviction"

    def warning(self) -> str:
        return (
            f"Redis is not durable (appendonly={self.appendonly}, maxmemory-policy={self.maxmemory_policy}): "
            "a Redis restart or an eviction loses requests and callbacks; set appendonly yes and "
            "maxmemory-policy noeviction (docs/operations.md)"
        )


@dataclass(frozen=True)
class ProcessBeat:
    """What one live process published in its last heartbeat."""

    id: str
    kind: str
    host: str
    pid: int
    queue: str
    fingerprint: str
    settings: dict[str, str]
    offset_s: float
    age_s: float
    dead_letters: int = 0  # a web's spooled callbacks that could not be applied (receiver/spool.py)
    spool: str = ""  # where they are (SPOOL_DIR): processes of one web on a host share it

    @classmethod
    def parse(cls, process_id: str, raw: str, age_s: float) -> ProcessBeat | None:
        try:
            beat = json.loads(raw)
            return cls(
                process_id,
                str(beat["kind"]),
                str(beat["host"]),
                int(beat["pid"]),
                str(beat["queue"]),
                str(beat["fingerprint"]),
                dict(beat["settings"]),
                float(beat["offset_s"]),
                age_s,
                int(beat.get("dead_letters", 0)),
                str(beat.get("spool", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class HealthReport:
    """Everything every process published, as of Redis's clock `now_ms`."""

    now_ms: int
    processes: list[ProcessBeat]
    sweep_age_s: float | None  # None: no sweep has run on this Redis (as far as it remembers)
    durability: Durability

    def workers(self, queue: str) -> list[ProcessBeat]:
        """Live workers listening on `queue` (one on another queue never takes this one's jobs)."""
        return [p for p in self.processes if p.kind == WORKER and p.queue == queue]

    def fingerprints(self) -> dict[str, list[ProcessBeat]]:
        found: dict[str, list[ProcessBeat]] = {}
        for process in self.processes:
            found.setdefault(process.fingerprint, []).append(process)
        return found

    def differing(self) -> list[str]:
        """The variables whose digests differ between live processes."""
        seen: dict[str, set[str]] = {}
        for process in self.processes:
            for variable, digest in process.settings.items():
                seen.setdefault(variable, set()).add(digest)
        return sorted(variable for variable, digests in seen.items() if len(digests) > 1)


def _redis_ms(time_answer: tuple[int, int]) -> int:
    seconds, micros = time_answer
    return int(seconds) * 1000 + int(micros) // 1000


def _config(answer: object, name: str) -> str | None:
    return answer.get(name) if isinstance(answer, dict) and isinstance(answer.get(name), str) else None


class Health:
    """Heartbeats and the sweep's mark, in Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def clock(self) -> tuple[int, float, Durability]:
        """(Redis's time in ms, this machine's clock minus Redis's in seconds, Redis's durability)
        in one round trip; the offset takes the round trip's midpoint as the moment of `TIME`."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.config_get("appendonly")
            pipe.config_get("maxmemory-policy")
            before = time.time()
            answers = pipe.execute(raise_on_error=False)
            after = time.time()
        if isinstance(answers[0], Exception):
            raise answers[0]
        now = _redis_ms(answers[0])
        durability = Durability(_config(answers[1], "appendonly"), _config(answers[2], "maxmemory-policy"))
        return now, (before + after) / 2 - now / 1000, durability

    def beat(self, process_id: str, published: dict[str, Any], now_ms: int) -> None:
        """Publish a heartbeat, and delete the processes silent for STALE_S."""
        stale_before = now_ms - int(STALE_S * 1000)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.PROCESSES, {process_id: now_ms})
            pipe.hset(keys.PROCESS_BEATS, process_id, json.dumps(published))
            pipe.zrangebyscore(keys.PROCESSES, "-inf", stale_before)
            *_, gone = pipe.execute()
        if gone:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.PROCESSES, *gone)
                pipe.hdel(keys.PROCESS_BEATS, *gone)
                pipe.execute()

    def leave(self, process_id: str) -> None:
        """A process stopping on purpose: gone at once, not after STALE_S."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.PROCESSES, process_id)
            pipe.hdel(keys.PROCESS_BEATS, process_id)
            pipe.execute()

    def report(self) -> HealthReport:
        """Every live process's heartbeat, the sweep's age and Redis's durability: one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zrange(keys.PROCESSES, 0, -1, withscores=True)
            pipe.hgetall(keys.PROCESS_BEATS)
            pipe.get(keys.SWEEP_LAST)
            pipe.config_get("appendonly")
            pipe.config_get("maxmemory-policy")
            answers = pipe.execute(raise_on_error=False)
        for answer in answers[:4]:
            if isinstance(answer, Exception):
                raise answer
        clock, beats, published, swept, appendonly, policy = answers
        now = _redis_ms(clock)
        processes = []
        for process_id, at in beats:
            age = (now - at) / 1000
            beat = ProcessBeat.parse(process_id, published.get(process_id, ""), age) if age <= STALE_S else None
            if beat is not None:
                processes.append(beat)
        sweep_age = max(0.0, (now - int(swept)) / 1000) if swept and swept.isdigit() else None
        durability = Durability(_config(appendonly, "appendonly"), _config(policy, "maxmemory-policy"))
        return HealthReport(now, processes, sweep_age, durability)


class Heartbeat(threading.Thread):
    """This process's heartbeat: at start it reads Redis's durability (one WARNING line when it
    is not durable, and again whenever it turns so), then publishes every HEARTBEAT_S. Under
    gevent's monkey-patching (web) it is a greenlet. A Redis outage skips beats, nothing more."""

    def __init__(
        self, redis: Redis, kind: str, settings: Settings, gauges: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.gauges = gauges  # figures of this process published with each beat
        self.health = Health(redis)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.process_id = f"{kind}:{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        digests = setting_digests(settings)
        self.published: dict[str, Any] = {
            "kind": kind,
            "host": self.host,
            "pid": self.pid,
            "queue": settings.queue_name,
            "fingerprint": fingerprint(digests),
            "settings": digests,
        }
        self.offset_s: float | None = None
        self.durable: bool | None = None
        self.stopping = threading.Event()

    def start(self) -> None:
        super().start()
        atexit.register(self.stop)

    def run(self) -> None:
        while True:
            try:
                self.beat()
            except RedisError as exc:
                log.warning("heartbeat skipped: Redis unavailable (%s)", type(exc).__name__)
            if self.stopping.wait(HEARTBEAT_S):
                return

    def beat(self) -> None:
        now, offset, durability = self.health.clock()
        if durability.durable is False and self.durable is not False:
            log.warning(durability.warning())
        elif durability.durable is None and self.offset_s is None:
            log.info(
                "Redis's durability is unknown: it refuses CONFIG GET (a managed Redis); check it with the provider"
            )
        self.offset_s, self.durable = offset, durability.durable
        gauges = self.gauges() if self.gauges is not None else {}
        self.health.beat(self.process_id, {**self.published, **gauges, "offset_s": round(offset, 4)}, now)

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        try:
            self.health.leave(self.process_id)
        except RedisError:
            pass  # it expires after STALE_S


_heartbeat: Heartbeat | None = None
_lock = threading.Lock()


def start_heartbeat(
    redis: Redis, kind: str, settings: Settings, gauges: Callable[[], dict[str, Any]] | None = None
) -> Heartbeat:
    """Start this process's heartbeat (once: a second call answers the first one's)."""
    global _heartbeat
    with _lock:
        if _heartbeat is None or _heartbeat.pid != os.getpid():
            _heartbeat = Heartbeat(redis, kind, settings, gauges)
            _heartbeat.start()
        return _heartbeat


def this_process() -> Heartbeat | None:
    """This process's heartbeat, if it runs one (a served web, a worker; not an app in a test)."""
    return _heartbeat if _heartbeat is not None and _heartbeat.pid == os.getpid() else None


def redis_now_ms() -> int:
    """Redis's clock, as this machine's clock and this process's last measured offset give it
    (this machine's clock until its heartbeat measured one)."""
    heartbeat = this_process()
    offset = heartbeat.offset_s if heartbeat is not None and heartbeat.offset_s is not None else 0.0
    return int((time.time() - offset) * 1000)
