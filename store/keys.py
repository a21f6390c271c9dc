"""Every Redis key name Answerback uses. The Lua scripts build the same names
from the prefix they are given (see lua/prelude.lua)."""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "ab:"


def at(prefix: str, name: str) -> str:
    """A key name built under PREFIX, moved under a partition's prefix (store/partitions.py)."""
    return prefix + name.removeprefix(PREFIX)


API, CALLS = "api", "calls"  # upstream rate-limit classes: every other API, call creation
API_CLASSES = (API, CALLS)  # the first is the default


def outbox(api_class: str) -> str:
    """List of request ids of one API class ready to send."""
    return f"{PREFIX}outbox:{api_class}"


RETRY = PREFIX + "retry"  # zset request id -> when to send again (ms)
LEASES = PREFIX + "leases"  # zset request id -> lease expiry (ms) while a drain job holds it
DEADLINES = PREFIX + "deadlines"  # zset request id -> callback deadline (ms)
PURGE_NEXT = PREFIX + "purge:next"  # the first purge bucket (list ab:purge:{n}) the sweep has not emptied
DRAINERS = PREFIX + "drainers"  # zset drain job id -> last heartbeat (ms)
DONE_CHANNEL = PREFIX + "done"  # pub/sub: request ids that reached a final status
SWEEP_LOCK = PREFIX + "sweep:lock"  # held by the one process sweeping
SWEEP_LAST = PREFIX + "sweep:last"  # when the sweep last ran (ms, Redis's clock)
PROCESSES = PREFIX + "processes"  # zset process id -> its last heartbeat (ms, Redis's clock); see health.py
PROCESS_BEATS = PREFIX + "processes:beats"  # hash process id -> what its last heartbeat published (JSON)
METRICS = PREFIX + "metrics"  # hash of counters every process adds to
# zset request id -> when its notification is due (ms); a claim leases it by pushing that forward
NOTIFY_DUE = PREFIX + "notify:pending"
NOTIFY_HOSTS = PREFIX + "notify:hosts"  # zset host:port -> when a claim looks at its queue next (ms)
# zset as NOTIFY_DUE, left by versions without per-host queues; emptied by claims
NOTIFY_DUE_UNSPLIT = PREFIX + "notify:due"
# The quarantine of refused callbacks (store/quarantine.py): zset entry id -> when kept (ms),
# hash entry id -> entry, the bytes they count; the same zset and bytes of the entries whose rid
# named no request when kept (dropped first); and the lock of the re-check web runs at start.
QUARANTINE = PREFIX + "quarantine"
QUARANTINE_ENTRIES = PREFIX + "quarantine:entries"
QUARANTINE_BYTES = PREFIX + "quarantine:bytes"
QUARANTINE_UNKNOWN = PREFIX + "quarantine:unknown"
QUARANTINE_UNKNOWN_BYTES = PREFIX + "quarantine:unknown:bytes"
QUARANTINE_LOCK = PREFIX + "quarantine:lock"


def request(rid: str) -> str:
    """One string: the record's fields packed (see record_format.py), read through the `read` script."""
    return f"{PREFIX}req:{rid}"


def deliveries(rid: str) -> str:
    """Deliveries besides the one kept as the record's response, each `digest delivery`."""
    return f"{PREFIX}req:{rid}:deliveries"


def notifications(rid: str) -> str:
    """List of the request's notification attempts, oldest first."""
    return f"{PREFIX}req:{rid}:notifications"


def notify_queue(host: str) -> str:
    """Zset request id -> when due (ms) of the notifications to one host:port, as in NOTIFY_DUE."""
    return f"{PREFIX}notify:host:{host}"


def api_id(value: str) -> str:
    return f"{PREFIX}api:{value}"


def nonce(digest: str) -> str:
    return f"{PREFIX}nonce:{digest}"


def orphan(value: str) -> str:
    return f"{PREFIX}orphan:{value}"


def named_tenant(name: str) -> str:
    """The tenant id of a tenant named in API_KEYS (`name:key`): its keys can change, its id
    (and so its requests) stays."""
    return "n" + hashlib.sha256(("tenant:" + name).encode()).hexdigest()[:31]


# 32 random bytes (hex) of this deployment, the key of unnamed keys' tenant ids (salted_tenant).
# Created once (SET NX) and never changed: deleting it moves every unnamed key to a new, empty tenant.
TENANT_SALT = PREFIX + "tenant:salt"


def salted_tenant(salt: str, key: str) -> str:
    """The tenant id of an API key listed without a name: an HMAC of the key with the deployment's
    salt, so that a key cannot be confirmed or guessed offline from the ids in key names and records."""
    return hmac.new(bytes.fromhex(salt), key.encode(), hashlib.sha256).hexdigest()[:32]


def legacy_tenant(key: str) -> str:
    """The id an unnamed key's tenant had before ids were salted: an alias its requests move from."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


SERIES_PREFIX = PREFIX + "series:"


def series(scope: str, block: int | str) -> str:
    """Hash of one scope's figures (`all`, or `t:` and a tenant id) over one block of minutes
    (store/series.py); lua/prelude.lua `series_block` builds the same name."""
    return f"{SERIES_PREFIX}{scope}:{block}"


def tenant_requests(tenant: str, status: str | None = None) -> str:
    if status:
        return f"{PREFIX}tenant:{tenant}:st:{status}"
    return f"{PREFIX}tenant:{tenant}:all"


def tenant_path_requests(tenant: str, path: str, status: str) -> str:
    """Zset request id -> submitted_at of a tenant's requests to one upstream path in one status:
    GET /v1/requests?path=... pages one of them by time (or, without a status, merges them)."""
    return f"{PREFIX}tenant:{tenant}:pst:{status}:{path}"


BULK_RETRIES = PREFIX + "bulk:running"  # zset bulk retry id -> when started (ms): the sweep works through them


def bulk_retry(bulk_id: str) -> str:
    """Hash: a bulk retry's tenant, status, count, retried, skipped, started_at, finished_at."""
    return f"{PREFIX}bulk:{bulk_id}"


def bulk_retry_rids(bulk_id: str) -> str:
    """List of the request ids a bulk retry has still to retry."""
    return f"{PREFIX}bulk:{bulk_id}:rids"


def bulk_retry_plan(bulk_id: str) -> str:
    """Hash request id -> the id its retry gets, for those at the head of the list until they
    are counted: a step cut off before counting retries them with the same ids again, and so
    knows which of them it retried itself (store/retries.py)."""
    return f"{PREFIX}bulk:{bulk_id}:plan"


def idempotency(tenant: str, key_digest: str) -> str:
    return f"{PREFIX}idem:{tenant}:{key_digest}"


def rate_limit(account: str, api_class: str) -> str:
    return f"{PREFIX}rl:{account}:{api_class}"


def events(rid: str) -> str:
    """List of the request's events beyond what its record and other lists tell, the newest
    kept (store/events.py); each `n json`, n counting every event it had."""
    return f"{PREFIX}req:{rid}:events"
