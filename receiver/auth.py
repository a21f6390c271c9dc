"""Bearer API keys. Each key is a tenant of its own, unless entries of API_KEYS
name their tenant (`name:key`), so that a tenant's key can be rotated: both
`acme:old` and `acme:new` then see acme's requests. Keys are held only as hashes."""
from __future__ import annotations

import hashlib
import hmac
from functools import wraps
from typing import Callable

from flask import g, request

from receiver.errors import Unauthorized
from receiver.services import services


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def key_table(entries: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(hash of key, tenant id) for every API_KEYS entry."""
    table = []
    for entry in entries:
        name, sep, key = entry.partition(":")
        if sep and name and key:
            table.append((_digest(key), "n" + _digest("tenant:" + name)[:31]))
        else:
            table.append((_digest(entry), _digest(entry)[:32]))
    return tuple(table)


def _table() -> tuple[tuple[str, str], ...]:
    svc = services()
    if svc.key_table is None:
        svc.key_table = key_table(svc.settings.api_keys)
    return svc.key_table


def authenticate() -> str:
    """The tenant whose key is presented; compared in constant time against every key."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing bearer API key")
    presented = _digest(key.strip())
    tenant = ""
    for key_hash, owner in _table():
        if hmac.compare_digest(presented, key_hash):
            tenant = owner
    if not tenant:
        raise Unauthorized("invalid API key")
    return tenant


def require_key(view: Callable) -> Callable:
    @wraps(view)
    def wrapper(*args, **kwargs):
        g.tenant = authenticate()
        return view(*args, **kwargs)
    return wrapper
