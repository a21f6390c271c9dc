"""Every setting of Answerback, read once from the environment.

Both processes (web and worker) build one `Settings` with `Settings.from_env()`;
each default below is the one that is safe in production.
"""
from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:   # not imported at run time: gunicorn's master reads this module, and must not import store/ or redis
    from store.connection import RedisTarget

CALLBACK_METHODS = ("POST", "GET")   # what the upstream may be asked to call back with; the first is the default


class ConfigError(ValueError):
    """A setting in the environment cannot be used."""


def _int(env: Mapping[str, str], name: str, default: int, low: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    if value < low:
        raise ConfigError(f"{name} must be at least {low}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in ("1", "true", "yes", "on")


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    count, _, window = raw.partition("/")
    try:
        if int(count) >= 1 and float(window) > 0:
            return raw
    except ValueError:
        pass
    raise ConfigError(f"{name} must be COUNT/SECONDS, like 300/5, not {raw!r}")


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _schedule(env: Mapping[str, str]) -> tuple[float, ...]:
    raw = env.get("NOTIFY_SCHEDULE", "").strip() or DEFAULT_NOTIFY_SCHEDULE
    try:
        delays = tuple(float(item) for item in raw.split(","))
    except ValueError:
        raise ConfigError(f"NOTIFY_SCHEDULE must be comma-separated seconds, not {raw!r}") from None
    if any(not 0 <= d <= 7 * 86400 for d in delays):
        raise ConfigError("NOTIFY_SCHEDULE delays must be from 0 to 604800 seconds")
    return delays


def _notify_settings(hosts: tuple[str, ...], secrets: tuple[str, ...], timeout: float) -> None:
    """Fail at start-up, not at the first notification: hosts must parse, secrets must be whsec_ keys."""
    from standardwebhooks import Webhook

    from notify_hosts import HostPolicy

    try:
        HostPolicy.parse(hosts)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if timeout <= 0:
        raise ConfigError("NOTIFY_TIMEOUT must be more than 0")
    if hosts and not secrets:
        raise ConfigError("WEBHOOK_SECRET is required when NOTIFY_HOSTS is set")
    for secret in secrets:
        try:
            if not secret.startswith("whsec_"):
                raise ValueError
            Webhook(secret)
        except Exception:
            raise ConfigError("WEBHOOK_SECRET must be whsec_ followed by base64 (comma-separate several)") from None


def _sentinels(env: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    found = []
    for entry in env.get("REDIS_SENTINELS", "").split(","):
        if not entry.strip():
            continue
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"REDIS_SENTINELS must be host:port,host:port; not {entry.strip()!r}")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def _hold(env: Mapping[str, str]) -> float:
    value = _float(env, "CALLBACK_HOLD", 30.0)
    if not 0 <= value <= 35:
        raise ConfigError("CALLBACK_HOLD must be 0 to 35 seconds (Plivo waits 40 s for an answer)")
    return value


def _replay_interval(env: Mapping[str, str]) -> float:
    value = _float(env, "SPOOL_REPLAY_INTERVAL", 1.0)
    if value <= 0:
        raise ConfigError("SPOOL_REPLAY_INTERVAL must be more than 0 seconds")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first is the default), in any letter case."""
    raw = env.get(name, "").strip()
    value = next((c for c in choices if c.lower() == raw.lower()), None) if raw else choices[0]
    if value is None:
        raise ConfigError(f"{name} must be {' or '.join(choices)}, not {raw!r}")
    return value


DEFAULT_NOTIFY_SCHEDULE = "5,300,1800,7200,18000,36000,36000"

# Client connections one web process keeps for callbacks and other requests beside its waiters.
OTHER_CONNECTIONS = 1000
# File descriptors one web process needs beside client sockets: Redis pools, the listener, logs.
FD_RESERVE = 128


def web_capacity(max_waiters: int, fd_limit: int) -> tuple[int, int]:
    """(connections, waiters) one web process can hold with `fd_limit` open files: each
    client is one socket, and OTHER_CONNECTIONS (or half of a small limit) stay free for
    callbacks, so waiters can never take the sockets the webhook needs."""
    connections = max(2, min(max_waiters + OTHER_CONNECTIONS, fd_limit - FD_RESERVE))
    return connections, max(0, min(max_waiters, connections - min(OTHER_CONNECTIONS, connections // 2)))


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (what an unprivileged
    process may do) and answer the soft limit now in force; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


@dataclass(frozen=True)
class Settings:
    # The Redis that holds everything (redis://, rediss://, unix://). With Sentinels only
    # its database number, credentials and scheme (rediss: TLS) count.
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Redis Sentinels (host, port) that name the primary, and the primary's name there.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "mymaster"
    # TLS (rediss://): a CA file to trust (e.g. a provider's self-signed CA), or, as an
    # explicit opt-in, no certificate check at all (encrypted, but open to a man in the middle).
    redis_tls_ca_file: str = ""
    redis_tls_insecure: bool = False
    # Replicas that must confirm a callback (Redis WAIT) before it is acknowledged.
    redis_min_replicas: int = 0
    # Seconds the webhook keeps trying to store a callback while Redis is away
    # (below Plivo's 40 s read timeout), before spooling it or answering 503.
    callback_hold: float = 30.0
    # Directory of the durable local spool for callbacks Redis could not take in time ("": none).
    spool_dir: str = ""
    # Seconds between the spool's attempts to replay into Redis while it holds entries.
    spool_replay_interval: float = 1.0
    # Upstream credentials; the token also verifies callback signatures.
    # Empty token: callbacks are accepted unsigned (local use only; a warning is logged).
    plivo_auth_id: str = ""
    plivo_auth_token: str = field(default="", repr=False)
    # Upstream base URL, ending in /v1/.
    plivo_api_url: str = "https://api.plivo.com/v1/"
    # Seconds for upstream connect and read.
    plivo_timeout: float = 10.0
    # Externally reachable base URL of web; callback URLs and signatures use it.
    public_url: str = "http://127.0.0.1:8000"
    # Accepted bearer keys on /v1/*; each is its own tenant.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    # Callback method asked of the upstream when a submission names none.
    callback_method: str = "POST"
    # Seconds a pending request waits for its callback before it is expired.
    callback_timeout: int = 3600
    # Largest callback_timeout a submission may ask for.
    max_callback_timeout: int = 86400
    # Seconds a finished request (and its deliveries) is kept.
    result_ttl: int = 604800
    # Seconds an unmatched (early) callback is kept waiting for its api_id.
    orphan_ttl: int = 86400
    # Largest request body accepted by web, in bytes.
    max_body_bytes: int = 64 * 1024
    # Attempts per request before it fails (connection errors, 429, 5xx).
    max_attempts: int = 5
    # Upstream rate limits, COUNT/SECONDS, per account: call creation (POST Call/) and the rest.
    rate_limit_calls: str = "2/1"
    rate_limit_api: str = "300/5"
    # Call creations one drain job holds at once (each waits for its rate-limit turn),
    # so that a backlog of calls never takes the threads other APIs need.
    calls_in_flight: int = 2
    # Requests one worker process keeps in flight to the upstream at once.
    send_concurrency: int = 32
    # Seconds a claimed request stays leased to its drain job without a heartbeat;
    # after that the sweep takes it back (see README, "Sending").
    lease_seconds: int = 60
    # Seconds without a heartbeat after which a drain job counts as dead.
    drainer_stale_seconds: int = 15
    # Drain jobs that may run at once across all workers.
    max_drainers: int = 4
    # Seconds one drain job runs before it hands over to a fresh one.
    drain_seconds: int = 30
    # Clients one web process holds waiting on ?wait at once; past it a wait answers at
    # once with X-Wait-Capped. Each costs one socket (file descriptor) and a greenlet.
    max_waiters: int = 10000
    # Seconds web keeps an idle keep-alive connection (gunicorn.conf.py): longer than the
    # senders' own pools keep theirs, so that they, not web, close it (see WebWorker there).
    web_keepalive: int = 120
    # Token of the main account, for X-Plivo-Signature-Ma-V3 when PLIVO_AUTH_ID is a
    # sub-account (empty: PLIVO_AUTH_TOKEN).
    plivo_main_auth_token: str = field(default="", repr=False)
    # Seconds a signed delivery's nonce is remembered; a replay within it changes nothing.
    replay_window: int = 3600
    # Accept the deprecated V2 signature too.
    accept_v2_signatures: bool = False
    # Seconds between expiry sweeps.
    sweep_interval: int = 1
    # RQ queue the worker listens on.
    queue_name: str = "answerback"
    # Log lines of web and workers: "text", or "json" (one JSON object a line, for log pipelines).
    log_format: str = "text"
    # Hosts a submission's notify_url may point at (host, host:port, *.example.com, an IP
    # address or network); empty: notifications are off. See notify_hosts.py.
    notify_hosts: tuple[str, ...] = ()
    # whsec_ secrets that sign notifications (Standard Webhooks); every one signs each.
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    # Seconds between notification attempts; after the last one the notification is failed.
    notify_schedule: tuple[float, ...] = tuple(float(d) for d in DEFAULT_NOTIFY_SCHEDULE.split(","))
    # Seconds one notification attempt may take to connect, send and get its answer.
    notify_timeout: float = 10.0
    # Notifications one worker process sends at once, and at most to one host (so a slow
    # or dead endpoint holds only its own notifications).
    notify_concurrency: int = 32
    notify_host_concurrency: int = 8

    @property
    def redis(self) -> RedisTarget:
        from store.connection import RedisTarget
        return RedisTarget(self.redis_url, self.redis_sentinels, self.redis_sentinel_master,
                           self.redis_tls_ca_file, self.redis_tls_insecure)

    @property
    def verify_signatures(self) -> bool:
        return bool(self.plivo_auth_token)

    @property
    def callback_url(self) -> str:
        return self.public_url.rstrip("/") + "/callbacks/plivo"

    @property
    def notify_lease_ms(self) -> int:
        """A claimed notification is due again after this: longer than one attempt can take."""
        return int((3 * self.notify_timeout + 5) * 1000)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        settings = cls._read(env)
        _notify_settings(settings.notify_hosts, settings.webhook_secrets, settings.notify_timeout)
        return settings

    @classmethod
    def _read(cls, env: Mapping[str, str]) -> "Settings":
        port = env.get("PORT", "8000")
        api_url = env.get("PLIVO_API_URL", cls.plivo_api_url)
        return cls(
            redis_url=env.get("REDIS_URL", cls.redis_url),
            redis_sentinels=_sentinels(env),
            redis_sentinel_master=env.get("REDIS_SENTINEL_MASTER", "").strip() or "mymaster",
            redis_tls_ca_file=env.get("REDIS_TLS_CA_FILE", ""),
            redis_tls_insecure=_bool(env, "REDIS_TLS_INSECURE", False),
            redis_min_replicas=_int(env, "REDIS_MIN_REPLICAS", 0),
            callback_hold=_hold(env),
            spool_dir=env.get("SPOOL_DIR", "").strip(),
            spool_replay_interval=_replay_interval(env),
            plivo_auth_id=env.get("PLIVO_AUTH_ID", ""),
            plivo_auth_token=env.get("PLIVO_AUTH_TOKEN", ""),
            plivo_api_url=api_url if api_url.endswith("/") else api_url + "/",
            plivo_timeout=_float(env, "PLIVO_TIMEOUT", 10.0),
            public_url=env.get("PUBLIC_URL", f"http://127.0.0.1:{port}").rstrip("/"),
            api_keys=tuple(k.strip() for k in env.get("API_KEYS", "").split(",") if k.strip()),
            callback_method=_choice(env, "CALLBACK_METHOD", CALLBACK_METHODS),
            callback_timeout=_int(env, "CALLBACK_TIMEOUT", 3600, low=1),
            max_callback_timeout=_int(env, "MAX_CALLBACK_TIMEOUT", 86400, low=1),
            result_ttl=_int(env, "RESULT_TTL", 604800, low=1),
            orphan_ttl=_int(env, "ORPHAN_TTL", 86400, low=1),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 64 * 1024, low=1024),
            max_attempts=_int(env, "MAX_ATTEMPTS", 5, low=1),
            rate_limit_calls=_rate(env, "RATE_LIMIT_CALLS", "2/1"),
            rate_limit_api=_rate(env, "RATE_LIMIT_API", "300/5"),
            calls_in_flight=_int(env, "CALLS_IN_FLIGHT", 2, low=1),
            send_concurrency=_int(env, "SEND_CONCURRENCY", 32, low=1),
            lease_seconds=_int(env, "LEASE_SECONDS", 60, low=2),
            drainer_stale_seconds=_int(env, "DRAINER_STALE_SECONDS", 15, low=2),
            max_drainers=_int(env, "MAX_DRAINERS", 4, low=1),
            drain_seconds=_int(env, "DRAIN_SECONDS", 30, low=1),
            max_waiters=_int(env, "MAX_WAITERS", 10000),
            web_keepalive=_int(env, "WEB_KEEPALIVE", 120, low=1),
            plivo_main_auth_token=env.get("PLIVO_MAIN_AUTH_TOKEN", ""),
            replay_window=_int(env, "REPLAY_WINDOW", 3600, low=1),
            accept_v2_signatures=_bool(env, "ACCEPT_V2_SIGNATURES", False),
            sweep_interval=_int(env, "SWEEP_INTERVAL", 1, low=1),
            queue_name=env.get("QUEUE_NAME", "answerback"),
            log_format=_choice(env, "LOG_FORMAT", ("text", "json")),
            notify_hosts=_list(env, "NOTIFY_HOSTS"),
            webhook_secrets=_list(env, "WEBHOOK_SECRET"),
            notify_schedule=_schedule(env),
            notify_timeout=_float(env, "NOTIFY_TIMEOUT", 10.0),
            notify_concurrency=_int(env, "NOTIFY_CONCURRENCY", 32, low=1),
            notify_host_concurrency=_int(env, "NOTIFY_HOST_CONCURRENCY", 8, low=1),
        )
