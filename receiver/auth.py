"""Bearer API keys. Each key is a tenant of its own, unless entries of API_KEYS
name their tenant (`name:key`), so that a tenant's key can be rotated: both
`acme:old` and `acme:new` then see acme's requests. Keys are held only as hashes."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from functools import cache, wraps
from typing import ParamSpec, TypeVar

from flask import g, request

from receiver.errors import Forbidden, Unauthorized
from receiver.services import Services, services
from store import keys

P = ParamSpec("P")
R = TypeVar("R")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def key_table(entries: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(hash of key, tenant id) for every API_KEYS entry."""
    table = []
    for entry in entries:
        name, sep, key = entry.partition(":")
        if sep and name and key:
            table.append((_digest(key), keys.named_tenant(name)))
        else:
            table.append((_digest(entry), _digest(entry)[:32]))
    return tuple(table)


def tenant_of(svc: Services, authorization: str) -> str:
    """The tenant whose key an Authorization header presents; compared in constant time
    against every key."""
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing bearer API key")
    if svc.key_table is None:
        svc.key_table = key_table(svc.settings.api_keys)
    presented = _digest(key.strip())
    tenant = ""
    for key_hash, owner in svc.key_table:
        if hmac.compare_digest(presented, key_hash):
            tenant = owner
    if not tenant:
        raise Unauthorized("invalid API key")
    return tenant


def require_key(view: Callable[P, R]) -> Callable[P, R]:
    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        g.tenant = tenant_of(services(), request.headers.get("Authorization", ""))
        return view(*args, **kwargs)

    return wrapper


@cache
def admin_key_hashes(entries: tuple[str, ...]) -> tuple[str, ...]:
    """ADMIN_API_KEYS, held only as hashes."""
    return tuple(hashlib.sha256(entry.encode()).hexdigest() for entry in entries)


def require_admin(view: Callable[P, R]) -> Callable[P, R]:
    """An admin endpoint: an ADMIN_API_KEYS key (compared in constant time against every one);
    a key of API_KEYS alone is a 403, no key or an unknown one a 401."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
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
            raise Forbidden("this endpoint takes an admin key (ADMIN_API_KEYS)")
        return view(*args, **kwargs)

    return wrapper
