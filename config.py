"""Every setting of Answerback, declared once and read once from the environment.

A setting is one field of `Settings`, declared with its environment variable, its default (the
one that is safe in production), the values it accepts and its meaning. Web, workers and
gunicorn.conf.py each build one `Settings` with `Settings.from_env()`; no other module reads a
setting from the environment (tests/test_config.py checks). The configuration reference,
docs/configuration.md, is generated from the declarations: `python3 -m config` writes it.

gunicorn's master reads this module, so it imports nothing of store/ or redis.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args
from urllib.parse import urlsplit

CallbackMethod = Literal["POST", "GET"]  # what the upstream may be asked to call back with; the first is the default
CALLBACK_METHODS: tuple[CallbackMethod, ...] = get_args(CallbackMethod)
LOG_LEVELS = ("info", "debug", "warning", "error", "critical")  # gunicorn's names; the first is the default
TRUE = ("1", "true", "yes", "on")  # a flag is on for these (any letter case), off for anything else
CALLBACK_HOLD_MAX = 35  # seconds: Plivo waits 40 s for the webhook's answer
NOTIFY_DELAY_MAX = 7 * 86400

REFERENCE = Path(__file__).resolve().parent / "docs" / "configuration.md"
REFERENCE_COMMAND = "python3 -m config"
CLUSTER_PARTITIONS = 24  # STORE_PARTITIONS on a Redis Cluster unless set (store/partitions.py says why)


class ConfigError(ValueError):
    """A setting in the environment cannot be used."""


# Readers: (variable, its value: stripped, never empty) -> the setting's value, or ConfigError
# with a message that names the variable. An unset or empty variable is never read: it takes
# the setting's default.


def _text(name: str, raw: str) -> str:
    return raw


def _int(name: str, raw: str, low: int = 0, high: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    if value < low:
        raise ConfigError(f"{name} must be at least {low}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be at most {high}")
    return value


def _number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


def _positive(name: str, raw: str) -> float:
    value = _number(name, raw)
    if value <= 0:
        raise ConfigError(f"{name} must be more than 0")
    return value


def _hold(name: str, raw: str) -> float:
    value = _number(name, raw)
    if not 0 <= value <= CALLBACK_HOLD_MAX:
        raise ConfigError(f"{name} must be 0 to {CALLBACK_HOLD_MAX} seconds (Plivo waits 40 s for an answer)")
    return value


def _flag(name: str, raw: str) -> bool:
    return raw.lower() in TRUE


def _either(words: tuple[str, ...] | list[str]) -> str:
    """The words joined as in "a, b or c"."""
    return " or ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else list(words))


def _choice(choices: tuple[str, ...], name: str, raw: str) -> str:
    """One of `choices`, in any letter case."""
    value = next((c for c in choices if c.lower() == raw.lower()), None)
    if value is None:
        raise ConfigError(f"{name} must be {_either(choices)}, not {raw!r}")
    return value


def _rate(name: str, raw: str) -> str:
    count, _, window = raw.partition("/")
    try:
        if int(count) >= 1 and float(window) > 0:
            return raw
    except ValueError:
        pass
    raise ConfigError(f"{name} must be COUNT/SECONDS, like 300/5, not {raw!r}")


def _list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _sentinels(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    found = []
    for entry in _list(name, raw):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{name} must be host:port,host:port; not {entry!r}")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def _cluster_nodes(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    """host:port seeds (an IPv6 address in brackets). Not URLs: the password and TLS come from
    REDIS_URL, and an entry that looks like a URL is not shown, lest it carry a password."""
    found = []
    for entry in _list(name, raw):
        host, _, port = entry.rpartition(":")
        bare = host.strip("[]")
        if "/" in entry or "@" in entry:
            raise ConfigError(
                f"{name} must be host:port,host:port, not URLs (user, password and TLS come from REDIS_URL)"
            )
        if not bare or (":" in bare and not host.startswith("[")) or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name} must be host:port,host:port; not {entry!r}")
        found.append((bare, int(port)))
    return tuple(found)


def _schedule(name: str, raw: str) -> tuple[float, ...]:
    try:
        delays = tuple(float(item) for item in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated seconds, not {raw!r}") from None
    if any(not 0 <= d <= NOTIFY_DELAY_MAX for d in delays):
        raise ConfigError(f"{name} delays must be from 0 to {NOTIFY_DELAY_MAX} seconds")
    return delays


def _api_url(name: str, raw: str) -> str:
    return raw if raw.endswith("/") else raw + "/"


def _base_url(name: str, raw: str) -> str:
    return raw.rstrip("/")


def _hosts(name: str, raw: str) -> tuple[str, ...]:
    """Checked at start-up, not at the first notification."""
    from notify_hosts import HostPolicy

    hosts = _list(name, raw)
    try:
        HostPolicy.parse(hosts)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return hosts


def _webhook_secrets(name: str, raw: str) -> tuple[str, ...]:
    """Checked at start-up, not at the first notification: each must be a whsec_ key."""
    secrets = _list(name, raw)
    for secret in secrets:
        _whsec(name, secret, "(comma-separate several)")
    return secrets


def _whsec(name: str, secret: str, hint: str) -> None:
    from standardwebhooks import Webhook

    try:
        if not secret.startswith("whsec_"):
            raise ValueError
        Webhook(secret)
    except Exception:
        raise ConfigError(f"{name} must be whsec_ followed by base64 {hint}") from None


def _tenant_secrets(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    """(tenant name, whsec_ secret) pairs from `name=whsec_...,name=whsec_...`."""
    pairs = []
    for entry in _list(name, raw):
        tenant, sep, secret = entry.partition("=")
        if not (sep and tenant.strip()):
            raise ConfigError(f"{name} must be tenant=whsec_... pairs, comma-separated")
        _whsec(name, secret.strip(), "after each tenant=")
        pairs.append((tenant.strip(), secret.strip()))
    return tuple(pairs)


@dataclass(frozen=True)
class Section:
    """A group of settings in docs/configuration.md."""

    title: str
    about: str


@dataclass(frozen=True)
class Declaration:
    """How one setting is read from the environment and described in docs/configuration.md."""

    variable: str
    section: Section
    meaning: str
    accepts: str  # the values it takes, as the reference says them
    read: Callable[[str, str], Any]
    shown_default: str = ""  # the default as the reference says it, when not the field's own


def setting(
    section: Section,
    variable: str,
    default: Any,
    meaning: str,
    *,
    read: Callable[[str, str], Any] = _text,
    accepts: str = "text",
    shown_default: str = "",
    secret: bool = False,
) -> Any:
    """A field of `Settings` set by the environment variable `variable`. A secret stays out of
    the settings' repr (and so out of logs and tracebacks)."""
    declaration = Declaration(variable, section, meaning, accepts, read, shown_default)
    return field(default=default, repr=not secret, metadata={"declaration": declaration})


def integer(
    section: Section, variable: str, default: int, meaning: str, *, low: int = 0, high: int | None = None
) -> Any:
    accepts = f"integer ≥ {low}" if high is None else f"integer, {low} to {high}"
    return setting(section, variable, default, meaning, read=partial(_int, low=low, high=high), accepts=accepts)


def flag(section: Section, variable: str, meaning: str) -> Any:
    """Off unless set to one of TRUE."""
    return setting(section, variable, False, meaning, read=_flag, accepts="`true` or `false`")


def choice(section: Section, variable: str, choices: tuple[str, ...], meaning: str) -> Any:
    """One of `choices` in any letter case; the first is the default."""
    return setting(
        section,
        variable,
        choices[0],
        meaning,
        read=partial(_choice, choices),
        accepts=_either([f"`{c}`" for c in choices]),
    )


REDIS = Section(
    "Redis",
    "Where the Redis that web, workers and RQ share is (or, with `REDIS_CLUSTER_NODES`, the store's Redis "
    "Cluster beside RQ's Redis), and how many replicas must have a write before it counts.",
)
UPSTREAM = Section(
    "Upstream",
    "The Plivo API (or one that answers like it) that workers send requests to, and "
    "how fast they may send. Proxies come from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and "
    "`NO_PROXY`, as Python reads them.",
)
REQUESTS = Section(
    "Requests API",
    "Who may submit requests on `/v1/*`, what a submission may ask for, and how long its record is kept.",
)
CALLBACKS = Section(
    "Callbacks (the webhook)",
    "Where the upstream sends its callbacks, which signatures web "
    "accepts on them, and what web does with a callback while Redis is away.",
)
WORKERS = Section(
    "Workers",
    "How worker processes drain the outbox: how much they keep in flight, how many "
    "drain jobs run, and when a silent one counts as dead. `manage.py run` starts `WORKERS` "
    "worker processes (2 unless set); in production, scale the Procfile's `worker`.",
)
NOTIFICATIONS = Section(
    "Notifications",
    "Signed notifications to the `notify_url` a submission names; they are off unless `NOTIFY_HOSTS` is set.",
)
WEB = Section(
    "Web server",
    "gunicorn (gevent workers) serving the API, the webhook and the console; "
    "gunicorn.conf.py takes these from `Settings` too.",
)
LOGGING = Section("Logging", "What web and workers write to stderr (and web's access log, where `ACCESS_LOG` says).")


@dataclass(frozen=True)
class Settings:
    redis_url: str = setting(
        REDIS,
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "The Redis that holds everything (`redis://`, `rediss://` for TLS, `unix://`). With `REDIS_SENTINELS` "
        "only its database number, user, password and scheme count. `manage.py run` starts a Redis of its own "
        "when this is unset. It may carry a password: it stays out of reprs and logs.",
        accepts="URL",
        secret=True,
    )
    redis_sentinels: tuple[tuple[str, int], ...] = setting(
        REDIS,
        "REDIS_SENTINELS",
        (),
        "Redis Sentinels that name the primary: web, workers and RQ ask them for it and follow a failover "
        "by themselves. Empty: `REDIS_URL` names the Redis itself.",
        read=_sentinels,
        accepts="`host:port`, comma-separated",
    )
    redis_cluster_nodes: tuple[tuple[str, int], ...] = setting(
        REDIS,
        "REDIS_CLUSTER_NODES",
        (),
        "Seed nodes of a Redis Cluster that holds the store (requests, results, outbox); any one reachable "
        "seed finds the rest. RQ's queue stays on `REDIS_URL` (plain, or through `REDIS_SENTINELS`): RQ does "
        "not run on a cluster. The cluster's user, password and TLS are `REDIS_URL`'s (its user, password and "
        "`rediss://` scheme; `REDIS_TLS_CA_FILE`, `REDIS_TLS_INSECURE`), as with Sentinel: the queue's Redis "
        "and the cluster share them. `REDIS_MIN_REPLICAS` counts each shard's replicas. Nodes should run with "
        "`cluster-require-full-coverage no`, so one shard's failover leaves the others serving "
        "(docs/cluster.md). Empty: the store is on `REDIS_URL`'s Redis too.",
        read=_cluster_nodes,
        accepts="`host:port`, comma-separated",
    )
    redis_sentinel_master: str = setting(
        REDIS, "REDIS_SENTINEL_MASTER", "mymaster", "The primary's name at the Sentinels."
    )
    redis_tls_ca_file: str = setting(
        REDIS,
        "REDIS_TLS_CA_FILE",
        "",
        "With `rediss://`: a CA certificate file to trust, e.g. a provider's own CA for its self-signed "
        "certificates (the hostname is still checked). Empty: the system's CAs.",
        accepts="file path",
    )
    redis_tls_insecure: bool = flag(
        REDIS,
        "REDIS_TLS_INSECURE",
        "With `rediss://`: accept any certificate (encrypted, but open to a man in the middle). An explicit "
        "opt-in for providers that give no CA file.",
    )
    redis_min_replicas: int = integer(
        REDIS,
        "REDIS_MIN_REPLICAS",
        0,
        "Replicas that must confirm a write (Redis `WAIT`) before a callback is answered 200, a submission "
        "202, and before a worker sends a request.",
    )
    store_partitions: int = setting(
        REDIS,
        "STORE_PARTITIONS",
        1,
        "How many partitions the store is split into, each a hash-tagged key prefix whose scripts touch it "
        f"alone, so that a Redis Cluster spreads them over its primaries (store/partitions.py; {CLUSTER_PARTITIONS} "
        "divides evenly among 2, 3, 4, 6, 8, 12 or 24 primaries; a cluster needs at least 2). 1 keeps every key "
        "under `ab:`, the single-Redis layout. Fixed once requests are stored: a process started with another "
        "count refuses to start.",
        read=partial(_int, low=1, high=1024),
        accepts="integer, 1 to 1024",
        shown_default=f"1; {CLUSTER_PARTITIONS} with `REDIS_CLUSTER_NODES`",
    )

    plivo_auth_id: str = setting(
        UPSTREAM, "PLIVO_AUTH_ID", "", "The upstream account's id. `manage.py run` uses the sandbox's when unset."
    )
    plivo_auth_token: str = setting(
        UPSTREAM,
        "PLIVO_AUTH_TOKEN",
        "",
        "The upstream account's token; it also verifies callback signatures. Required: web and workers refuse "
        "to start without it unless `ALLOW_UNSIGNED_CALLBACKS` is on.",
        secret=True,
    )
    plivo_api_url: str = setting(
        UPSTREAM,
        "PLIVO_API_URL",
        "https://api.plivo.com/v1/",
        "The upstream's base URL, ending in `/v1/` (a missing final `/` is added; any other ending is refused "
        "at start). `manage.py run` points it at the sandbox when no credentials are set.",
        read=_api_url,
        accepts="URL",
    )
    plivo_timeout: float = setting(
        UPSTREAM,
        "PLIVO_TIMEOUT",
        10.0,
        "Seconds an upstream send may take: connecting (TCP, proxy, TLS) within it, and the whole exchange, "
        "answer included, within it too.",
        read=_number,
        accepts="seconds",
    )
    max_attempts: int = integer(
        UPSTREAM, "MAX_ATTEMPTS", 5, "Sends per request (on connection errors, 429 and 5xx) before it fails.", low=1
    )
    rate_limit_calls: str = setting(
        UPSTREAM,
        "RATE_LIMIT_CALLS",
        "2/1",
        "The upstream's rate limit per account on call creation (`POST Call/`).",
        read=_rate,
        accepts="`COUNT/SECONDS`",
    )
    rate_limit_api: str = setting(
        UPSTREAM,
        "RATE_LIMIT_API",
        "300/5",
        "The upstream's rate limit per account on every other API.",
        read=_rate,
        accepts="`COUNT/SECONDS`",
    )

    api_keys: tuple[str, ...] = setting(
        REQUESTS,
        "API_KEYS",
        (),
        "Bearer keys accepted on `/v1/*`. Each is a tenant of its own, or `name:key` names its tenant, so that "
        "a tenant's key can be rotated (`acme:old` and `acme:new` both see acme's requests; `old` listed as "
        "`acme:old` keeps its requests with acme: docs/operations.md). Required: web refuses to start "
        "without one (workers do not use it). `manage.py run` makes one when unset.",
        read=_list,
        accepts="keys, comma-separated",
        secret=True,
    )
    tenant_move_interval: float = setting(
        REQUESTS,
        "TENANT_MOVE_INTERVAL",
        60.0,
        "Seconds between web's looks for requests filed under an id an API key had before (its unsalted "
        "id, or its own before it was named): found ones move to the key's tenant (docs/operations.md).",
        read=_positive,
        accepts="seconds, more than 0",
    )
    admin_api_keys: tuple[str, ...] = setting(
        REQUESTS,
        "ADMIN_API_KEYS",
        (),
        "Bearer keys for the admin endpoints (`/v1/quarantine`); a key of `API_KEYS` alone is refused there "
        "(403). Empty: no admin endpoint is usable.",
        read=_list,
        accepts="keys, comma-separated",
        secret=True,
    )
    callback_method: str = choice(
        REQUESTS,
        "CALLBACK_METHOD",
        CALLBACK_METHODS,
        "The callback method asked of the upstream when a submission names none.",
    )
    callback_timeout: int = integer(
        REQUESTS,
        "CALLBACK_TIMEOUT",
        3600,
        "Seconds a pending request waits for its callback before it is expired, when a submission does not say.",
        low=1,
    )
    max_callback_timeout: int = integer(
        REQUESTS, "MAX_CALLBACK_TIMEOUT", 86400, "The largest `callback_timeout` a submission may ask for.", low=1
    )
    result_ttl: int = integer(
        REQUESTS, "RESULT_TTL", 604800, "Seconds a finished request (and its deliveries) is kept.", low=1
    )
    max_body_bytes: int = integer(
        REQUESTS, "MAX_BODY_BYTES", 64 * 1024, "The largest request body web accepts, in bytes.", low=1024
    )

    public_url: str = setting(
        CALLBACKS,
        "PUBLIC_URL",
        "",
        "The externally reachable base URL of web: workers hand the upstream callback URLs under it and web "
        "checks callback signatures against it, so web and workers must be given the same one. Required: "
        "web and workers refuse to start without an absolute `http://` or `https://` URL.",
        read=_base_url,
        accepts="URL",
    )
    plivo_main_auth_token: str = setting(
        CALLBACKS,
        "PLIVO_MAIN_AUTH_TOKEN",
        "",
        "The main account's token, for `X-Plivo-Signature-Ma-V3` when `PLIVO_AUTH_ID` is a sub-account. "
        "Empty: `PLIVO_AUTH_TOKEN`.",
        secret=True,
    )
    accept_v2_signatures: bool = flag(CALLBACKS, "ACCEPT_V2_SIGNATURES", "Accept the deprecated V2 signature too.")
    allow_unsigned_callbacks: bool = flag(
        CALLBACKS,
        "ALLOW_UNSIGNED_CALLBACKS",
        "Start without `PLIVO_AUTH_TOKEN` and accept callbacks without a signature: anyone who can reach web "
        "can then forge a request's result. For local use only (a bench, a sandbox without a token).",
    )
    replay_window: int = integer(
        CALLBACKS,
        "REPLAY_WINDOW",
        3600,
        "Seconds a signed delivery's nonce is remembered; a replay within it changes nothing.",
        low=1,
    )
    orphan_ttl: int = integer(
        CALLBACKS, "ORPHAN_TTL", 86400, "Seconds an unmatched (early) callback is kept waiting for its `api_id`.", low=1
    )
    callback_hold: float = setting(
        CALLBACKS,
        "CALLBACK_HOLD",
        30.0,
        "Seconds the webhook keeps trying to store a callback while Redis is unreachable or failing over, "
        "before it spools the callback or answers 503; below the 40 s Plivo waits for an answer.",
        read=_hold,
        accepts=f"seconds, 0 to {CALLBACK_HOLD_MAX}",
    )
    spool_dir: str = setting(
        CALLBACKS,
        "SPOOL_DIR",
        "",
        "A local directory for callbacks Redis could not take within `CALLBACK_HOLD`, shared by all web "
        "processes of a machine; it must survive a restart (a volume, not tmpfs). Empty: no spool, and 503 "
        "after the hold.",
        accepts="directory",
    )
    spool_replay_interval: float = setting(
        CALLBACKS,
        "SPOOL_REPLAY_INTERVAL",
        1.0,
        "Seconds between the spool's attempts to replay its callbacks into Redis while it holds any.",
        read=_positive,
        accepts="seconds, more than 0",
    )
    quarantine_ttl: int = integer(
        CALLBACKS,
        "QUARANTINE_TTL",
        7 * 86400,
        "Seconds a callback refused for its signature or its shape (which our own settings may cause) is kept "
        "in the quarantine, to be verified again at web's start and on `POST /v1/quarantine/recheck`.",
        low=1,
    )
    quarantine_max_bytes: int = integer(
        CALLBACKS,
        "QUARANTINE_MAX_BYTES",
        32 * 1024 * 1024,
        "Redis memory the quarantine may take, each callback counted as its size plus 256 bytes (384 if its "
        "`rid` names no request); past it those naming none are dropped first, then the oldest (and counted). "
        "0: nothing is kept.",
    )

    send_concurrency: int = integer(
        WORKERS, "SEND_CONCURRENCY", 32, "Requests one worker process keeps in flight to the upstream at once.", low=1
    )
    calls_in_flight: int = integer(
        WORKERS,
        "CALLS_IN_FLIGHT",
        2,
        "Call creations one drain job holds at once (each waits for its rate-limit turn), so that a backlog "
        "of calls never takes the threads other APIs need.",
        low=1,
    )
    max_drainers: int = integer(
        WORKERS, "MAX_DRAINERS", 4, "Drain jobs that may run at once across all workers.", low=1
    )
    drain_seconds: int = integer(
        WORKERS, "DRAIN_SECONDS", 30, "Seconds one drain job runs before it hands over to a fresh one.", low=1
    )
    lease_seconds: int = integer(
        WORKERS,
        "LEASE_SECONDS",
        60,
        "Seconds a claimed request stays with its drain job without a heartbeat; after that the sweep takes "
        "it back. A backstop: a dead drain job's requests come back after `DRAINER_STALE_SECONDS`.",
        low=2,
    )
    drainer_stale_seconds: int = integer(
        WORKERS,
        "DRAINER_STALE_SECONDS",
        15,
        "Seconds without a heartbeat after which a drain job counts as dead: the next sweep takes its "
        "requests back and starts another drain job.",
        low=2,
    )
    sweep_interval: int = integer(
        WORKERS, "SWEEP_INTERVAL", 1, "Seconds between sweeps (expiry, recovery, purge).", low=1
    )
    bulk_retry_batch: int = integer(
        WORKERS,
        "BULK_RETRY_BATCH",
        500,
        "Requests of bulk retries (`POST /v1/requests/retry`) the sweep retries in one pass.",
        low=1,
    )
    queue_name: str = setting(
        WORKERS,
        "QUEUE_NAME",
        "answerback",
        "The RQ queue web and the sweep enqueue drain jobs on, and workers listen on.",
    )

    notify_hosts: tuple[str, ...] = setting(
        NOTIFICATIONS,
        "NOTIFY_HOSTS",
        (),
        "Hosts a submission's `notify_url` may point at: `host`, `host:port`, `*.example.com`, an IP address "
        "or a network. Empty: notifications are off.",
        read=_hosts,
        accepts="hosts, comma-separated",
    )
    webhook_secrets: tuple[str, ...] = setting(
        NOTIFICATIONS,
        "WEBHOOK_SECRET",
        (),
        "The `whsec_` secrets that sign notifications (Standard Webhooks); every one signs each, so that a "
        "secret can be rotated (add the new one, move receivers to it, remove the old). Required with "
        "`NOTIFY_HOSTS`.",
        read=_webhook_secrets,
        accepts="`whsec_` + Base64, comma-separated",
        secret=True,
    )
    tenant_webhook_secrets: tuple[tuple[str, str], ...] = setting(
        NOTIFICATIONS,
        "TENANT_WEBHOOK_SECRETS",
        (),
        "Secrets of their own for tenants named in `API_KEYS` (`name:key`): `name=whsec_...`, "
        "comma-separated (a name given twice: both sign, for a rotation). A named tenant's notifications "
        "are signed with its own secrets instead of `WEBHOOK_SECRET`, so that no other tenant can make a "
        "validly signed notification arrive at its endpoint.",
        read=_tenant_secrets,
        accepts="`name=whsec_...`, comma-separated",
        secret=True,
    )
    notify_schedule: tuple[float, ...] = setting(
        NOTIFICATIONS,
        "NOTIFY_SCHEDULE",
        (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0),
        "Seconds between notification attempts; after the last one the notification is failed.",
        read=_schedule,
        accepts=f"seconds, comma-separated, each 0 to {NOTIFY_DELAY_MAX}",
    )
    notify_timeout: float = setting(
        NOTIFICATIONS,
        "NOTIFY_TIMEOUT",
        10.0,
        "Seconds one notification attempt may take to connect, send and get its answer.",
        read=_positive,
        accepts="seconds, more than 0",
    )
    notify_concurrency: int = integer(
        NOTIFICATIONS, "NOTIFY_CONCURRENCY", 32, "Notifications one worker process sends at once.", low=1
    )
    notify_host_concurrency: int = integer(
        NOTIFICATIONS,
        "NOTIFY_HOST_CONCURRENCY",
        8,
        "Notifications one worker process sends at once to one host, so that a slow or dead endpoint holds "
        "only its own.",
        low=1,
    )

    port: int = integer(WEB, "PORT", 8000, "The port web listens on, on every interface.", low=1, high=65535)
    web_concurrency: int = integer(WEB, "WEB_CONCURRENCY", 2, "gunicorn processes of web.", low=1)
    web_keepalive: int = integer(
        WEB,
        "WEB_KEEPALIVE",
        120,
        "Seconds web keeps an idle keep-alive connection open. Keep it above the idle expiry of every client "
        "and proxy in front of web, so that they, not web, close it: at equal values a callback sent on a "
        "connection just as web closes it is lost, and Plivo does not send it again.",
        low=1,
    )
    max_waiters: int = integer(
        WEB,
        "MAX_WAITERS",
        10000,
        "Clients one web process holds waiting on `?wait` at once; past it a wait answers at once, with "
        "`X-Wait-Capped`. Each costs a socket (a file descriptor) and a greenlet.",
    )
    max_waiters_per_tenant: int = setting(
        WEB,
        "MAX_WAITERS_PER_TENANT",
        5000,
        "Of those, the clients of one tenant (API key) at most, so that one tenant's crowd cannot take "
        "every waiter slot from the others. When connections run short, the tenant holding the most "
        "waiters is answered first.",
        read=partial(_int, low=1, high=None),
        accepts="integer ≥ 1",
        shown_default="half of `MAX_WAITERS`",
    )

    log_level: str = choice(LOGGING, "LOG_LEVEL", LOG_LEVELS, "The log level of web (gunicorn) and workers.")
    log_format: str = choice(
        LOGGING,
        "LOG_FORMAT",
        ("text", "json"),
        "How lines are written. With `json` every line of web (gunicorn's error and access lines included) "
        "and of workers (RQ's included) is one JSON object with `time`, `level`, `logger`, `message`, and "
        "`request_id` / `api_id` on the lines about one request, for a log pipeline.",
    )
    access_log: str = setting(
        LOGGING,
        "ACCESS_LOG",
        "",
        "Where web logs each request it answers (request line and status, never headers or user names): `-` "
        "for stdout, or a file. Empty: no access log.",
        accepts="`-` or a file path",
    )

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
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings `env` (the process's environment unless given) sets; an unset or empty
        variable takes its default. Raises ConfigError naming the first variable that cannot be used."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, declaration in declarations().items():
            raw = env.get(declaration.variable, "").strip()
            if raw:
                values[name] = declaration.read(declaration.variable, raw)
        values.setdefault("max_waiters_per_tenant", max(1, values.get("max_waiters", cls.max_waiters) // 2))
        if values.get("redis_cluster_nodes"):
            values.setdefault("store_partitions", CLUSTER_PARTITIONS)
            if values["store_partitions"] < 2:
                raise ConfigError(
                    "STORE_PARTITIONS=1 keeps every key under one prefix, which a Redis Cluster spreads over many "
                    f"slots: no script could run; leave it unset ({CLUSTER_PARTITIONS}) or set at least 2"
                )
        if values.get("notify_hosts") and not values.get("webhook_secrets"):
            raise ConfigError("WEBHOOK_SECRET is required when NOTIFY_HOSTS is set")
        return cls(**values)

    def check_start(self, role: Role) -> None:
        """What web (`role` "web") or a worker refuses to start with, beyond what each setting's
        own rules refuse: settings that would not stop the process but would lose every result
        silently (callback URLs nobody can reach or verify, forgeable callbacks, an API nobody
        can call, an upstream that answers 404). Raises ConfigError naming the variable."""
        url = urlsplit(self.public_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            shown = f"not {shown_url(self.public_url)!r}" if self.public_url else "it is not set"
            raise ConfigError(
                "PUBLIC_URL must be the absolute http(s) URL web is reached at, the same for web and workers "
                f"(callback URLs and their signatures use it); {shown}"
            )
        if not self.plivo_auth_token and not self.allow_unsigned_callbacks:
            raise ConfigError(
                "PLIVO_AUTH_TOKEN is not set: without it callbacks cannot be verified and anyone could forge "
                "a result; set it, or ALLOW_UNSIGNED_CALLBACKS=true for local use"
            )
        if not self.plivo_api_url.endswith("/v1/"):
            raise ConfigError(
                f"PLIVO_API_URL must end in /v1/, like https://api.plivo.com/v1/; not {shown_url(self.plivo_api_url)!r}"
            )
        if role == "web" and not self.api_keys:
            raise ConfigError("API_KEYS is empty: web would refuse every call on /v1/*; set at least one key")

    def summary(self) -> str:
        """What this process uses, for its start-up log line: never a password, key or token."""
        store = ""
        if self.redis_cluster_nodes:
            seeds = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self.redis_cluster_nodes)
            store = f"store on cluster {','.join(seeds)}, "
        if self.redis_sentinels:
            where = "sentinels " + ",".join(f"{host}:{port}" for host, port in self.redis_sentinels)
            where += f" master {self.redis_sentinel_master}"
        else:
            url = urlsplit(self.redis_url)
            where = url.path if url.scheme == "unix" else f"{url.hostname}:{url.port or 6379}"
        return (
            f"{store}Redis {where} db {redis_db(self.redis_url)}, queue {self.queue_name}, callbacks to "
            f"{shown_url(self.callback_url)}, signatures {'checked' if self.verify_signatures else 'NOT checked'}, "
            f"notifications {'on' if self.notify_hosts else 'off'}"
        )


Role = Literal["web", "worker"]
EX_CONFIG = 78  # sysexits.h: a configuration error; a supervisor should not restart the process in a loop


def shown_url(url: str) -> str:
    """`url` as it may be shown in a log line or an error: a password it carries (a callback URL
    with basic auth in it, say) as `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def redis_db(url: str) -> int:
    """The database number a Redis URL names (`/N`, or `?db=N` for a unix socket), 0 if none."""
    parts = urlsplit(url)
    query = dict(item.partition("=")[::2] for item in parts.query.split("&") if item)
    raw = query.get("db") or (parts.path.strip("/") if parts.scheme != "unix" else "")
    return int(raw) if raw.isdigit() else 0


def settings_for(role: Role) -> Settings:
    """The process's settings, checked for `role`; anything wrong ends the process at once with one
    line on stderr naming the variable, and exit status EX_CONFIG (gunicorn's master included: it
    reads this in gunicorn.conf.py, before it starts any worker)."""
    try:
        settings = Settings.from_env()
        settings.check_start(role)
    except ConfigError as exc:
        refuse(role, str(exc))
    return settings


def refuse(role: str, message: str) -> NoReturn:
    print(f"answerback {role}: refusing to start: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EX_CONFIG)


def declarations() -> dict[str, Declaration]:
    """Every setting's declaration, by its field name, in the order of `Settings`."""
    return {f.name: f.metadata["declaration"] for f in fields(Settings)}


def _shown(value: Any) -> str:
    """A default as the reference writes it."""

    def plain(item: Any) -> str:
        if isinstance(item, float) and item.is_integer():
            return str(int(item))
        return str(item)

    if value in ("", ()):
        return "empty"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, tuple):
        return "`" + ",".join(plain(item) for item in value) + "`"
    return f"`{plain(value)}`"


def reference() -> str:
    """docs/configuration.md: every setting, grouped by section, as the declarations say it."""
    sections: dict[Section, list[tuple[str, Declaration]]] = {}
    for name, declaration in declarations().items():
        sections.setdefault(declaration.section, []).append((name, declaration))
    lines = [
        "# Configuration",
        "",
        f"Generated from the declarations in `config.py` by `{REFERENCE_COMMAND}`: change a setting there,",
        "then run that command; tests/test_config.py fails while this page differs from what it writes.",
        "",
        "Web and workers read every setting from the environment when they start. An unset or empty",
        "variable takes its default; a value that cannot be used stops the process at start, with a message",
        "that names the variable. A flag is on for `1`, `true`, `yes` or `on` in any letter case, and off for",
        "anything else. `manage.py run` reads a `.env` file over the environment, and three variables of its",
        "own: `WORKERS`, `REDIS_PORT` and `SANDBOX_PORT` (local/run.py).",
    ]
    for section, members in sections.items():
        lines += [
            "",
            f"## {section.title}",
            "",
            section.about,
            "",
            "| variable | default | values | meaning |",
            "|---|---|---|---|",
        ]
        for name, d in members:
            default = d.shown_default or _shown(getattr(Settings, name))
            lines.append(f"| `{d.variable}` | {default} | {d.accepts} | {d.meaning} |")
    return "\n".join(lines) + "\n"


# Client connections one web process keeps for callbacks and other requests beside its waiters.
OTHER_CONNECTIONS = 1000
# Redis connections one web process opens at most, by pool (receiver/services.py): requests
# (webhook, API), callbacks, ?wait reads, RQ's (enqueueing drain jobs), the done listener's.
WEB_REDIS_POOLS = {"requests": 64, "callbacks": 64, "waiters": 64, "queue": 8, "listener": 1}
# File descriptors one web process needs beside client sockets and Redis pools: the listening
# socket, logs, gevent's own, the spool, Sentinel lookups.
FD_OTHER = 64
FD_RESERVE = sum(WEB_REDIS_POOLS.values()) + FD_OTHER


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


if __name__ == "__main__":
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(reference())
    print(f"wrote {REFERENCE}")
