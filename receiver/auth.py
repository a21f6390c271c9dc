"""Bearer API keys. Each key is a tenant of its own, unless entries of API_KEYS
name their tenant (`name:key`), so that a tenant's key can be rotated: both
`acme:old` and `acme:new` then see acme's requests. Keys are held only as hashes;
tenant ids and their aliases are store/tenants.py's."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import cache, wraps
from typing import ParamSpec, TypeVar

from flask import g, request
from redis.exceptions import RedisError

from receiver.errors import Forbidden, Unauthorized
from receiver.services import Services, services
from store import keys
from store.tenants import Tenant, keep_salt, move_aliases, salt

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger(__name__)

# What a tenant name in `name:key` looks like, and the shortest key part of one: an entry
# with a colon that is not like this is more likely one key with a colon in it.
TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MIN_NAMED_KEY = 16
SALT_RETRY_S = 1.0  # how often a process starting while Redis is away tries to read the salt again


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _named(entry: str) -> tuple[str, str] | None:
    name, sep, key = entry.partition(":")
    return (name, key) if sep and name and key else None


def key_table(entries: tuple[str, ...], deployment_salt: str) -> tuple[tuple[str, Tenant], ...]:
    """(hash of key, its tenant) for every API_KEYS entry. A tenant's aliases are every id one
    of its keys had before (store/tenants.py), except the id of a tenant listed itself and an id
    two tenants could claim (one key listed twice, under two names): whose it is, is unknown."""
    owners: list[tuple[str, str]] = []
    former: tuple[str, ...]
    aliases: dict[str, dict[str, None]] = {}
    for entry in entries:
        named = _named(entry)
        if named:
            tenant, key = keys.named_tenant(named[0]), named[1]
            former = (keys.legacy_tenant(key), keys.salted_tenant(deployment_salt, key))
        else:
            tenant, key = keys.salted_tenant(deployment_salt, entry), entry
            former = (keys.legacy_tenant(entry),)
        owners.append((_digest(key), tenant))
        aliases.setdefault(tenant, {}).update(dict.fromkeys(former))
    claims = Counter(alias for former_ids in aliases.values() for alias in former_ids)
    kept = {t: tuple(a for a in ids if a not in aliases and claims[a] == 1) for t, ids in aliases.items()}
    return tuple((key_hash, Tenant(tenant, kept[tenant])) for key_hash, tenant in owners)


def _table(svc: Services) -> tuple[tuple[str, Tenant], ...]:
    """Built at the first authentication, with the deployment's salt (one read, or its creation)."""
    if svc.key_table is None:
        svc.tenant_salt = salt(svc.redis, svc.settings.redis_min_replicas)
        svc.key_table = key_table(svc.settings.api_keys, svc.tenant_salt)
    return svc.key_table


def identity_of(svc: Services, authorization: str) -> Tenant:
    """The tenant whose key an Authorization header presents; compared in constant time
    against every key."""
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing bearer API key")
    presented = _digest(key.strip())
    tenant = None
    for key_hash, owner in _table(svc):
        if hmac.compare_digest(presented, key_hash):
            tenant = owner
    if tenant is None:
        raise Unauthorized("invalid API key")
    return tenant


def tenant_of(svc: Services, authorization: str) -> str:
    return identity_of(svc, authorization).id


def require_key(view: Callable[P, R]) -> Callable[P, R]:
    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        tenant = identity_of(services(), request.headers.get("Authorization", ""))
        g.tenant, g.tenant_aliases = tenant.id, tenant.aliases
        return view(*args, **kwargs)

    return wrapper


def log_api_keys(entries: tuple[str, ...]) -> None:
    """At start: how many keys, which tenant names (never a key), and a warning for each entry
    that reads as `name:key` but looks like one key with a colon in it (its parts could be a
    key's: neither is logged)."""
    names: set[str] = set()
    first: dict[str, int] = {}
    for position, entry in enumerate(entries, 1):
        named = _named(entry)
        key = named[1] if named else entry
        if key in first:
            log.warning("API_KEYS entries %d and %d hold the same key: it is the later one's", first[key], position)
        first.setdefault(key, position)
        if named is None:
            continue
        if TENANT_NAME.fullmatch(named[0]) and len(named[1]) >= MIN_NAMED_KEY:
            names.add(named[0])
            continue
        log.warning(
            "API_KEYS entry %d is read as `name:key` (the key after the first colon, of the tenant named "
            "before it), but its name is not like a tenant name or its key is under %d characters; if the "
            "whole entry is one key, list it as `name:` followed by the key",
            position,
            MIN_NAMED_KEY,
        )
    unnamed = sum(1 for entry in entries if _named(entry) is None)
    log.info(
        "serving %d API keys: %d of unnamed tenants, named tenants: %s",
        len(entries),
        unnamed,
        ", ".join(sorted(names)) or "none",
    )


def start_alias_moves(svc: Services, then: Callable[[], object] = lambda: None) -> None:
    """In the background: read the deployment's salt (again every second while Redis is away:
    the process serves meanwhile, and reads it at its first authentication if that comes
    first), call `then` (the heartbeat's start: a beat tells that this process holds the salt,
    so that one process starting while the salt is deleted is the only way to a second one),
    then move requests filed under the aliases of the configured keys' tenants, now and every
    TENANT_MOVE_INTERVAL: during a rolling deployment, processes of the version before still
    file requests under the unsalted ids."""
    threading.Thread(target=_move_aliases, args=(svc, then), name="tenant-aliases", daemon=True).start()


def _move_aliases(svc: Services, then: Callable[[], object]) -> None:
    warned = False
    while True:
        try:
            _table(svc)
            break
        except RedisError as exc:
            if not warned:
                log.warning("could not read the tenant salt (%s); trying again every second", type(exc).__name__)
                warned = True
            time.sleep(SALT_RETRY_S)
    then()
    while True:
        try:
            tenants = {tenant.id: tenant for _, tenant in _table(svc)}
            if svc.tenant_salt and not keep_salt(svc.redis, svc.tenant_salt):
                log.error(
                    "the tenant salt in Redis (%s) is not the one this process uses: it was deleted and "
                    "made again, so unnamed keys' requests are split between two tenant ids; restart "
                    "every web process (docs/operations.md, Tenants and keys)",
                    keys.TENANT_SALT,
                )
            moved = move_aliases(svc.redis, svc.requests.scripts, tenants.values(), svc.partitions)
            if moved:
                log.info("moved %d requests from former tenant ids of API keys to their tenants", moved)
        except RedisError as exc:
            log.warning("could not move requests of former tenant ids (%s); trying again", type(exc).__name__)
        except Exception:  # a bug must not stop the salt being kept for the process's life
            log.exception("moving requests of former tenant ids failed; trying again")
        time.sleep(svc.settings.tenant_move_interval)


@cache
def admin_key_hashes(entries: tuple[str, ...]) -> tuple[str, ...]:
    """ADMIN_API_KEYS, held only as hashes."""
    return tuple(hashlib.sha256(entry.encode()).hexdigest() for entry in entries)


def require_admin(view: Callable[P, R]) -> Callable[P, R]:
    """An admin endpoint: an ADMIN_API_KEYS key (compared in constant time against every one);
    a key of API_KEYS alone is a 403, no key or an unknown one a 401."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        check_admin("this endpoint takes an admin key (ADMIN_API_KEYS)")
        return view(*args, **kwargs)

    return wrapper


def check_admin(refusal: str) -> None:
    """Let through only a request with an ADMIN_API_KEYS key: `refusal` is the 403's error for
    a key of API_KEYS alone; no key or an unknown one is a 401."""
    svc, authorization = services(), request.headers.get("Authorization", "")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing bearer API key")
    presented = hashlib.sha256(key.strip().encode()).hexdigest()
    admin = False
    for key_hash in admin_key_hashes(svc.settings.admin_api_keys):
        admin |= hmac.compare_digest(presented, key_hash)
    if not admin:
        tenant_of(svc, authorization)  # an unknown key: 401
        raise Forbidden(refusal)
