"""Bearer API keys: each key is its own tenant, known only by its hash."""
from __future__ import annotations

import hashlib
import hmac
from functools import wraps
from typing import Callable

from flask import g, request

from receiver.errors import Unauthorized
from receiver.services import services


def tenant_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _known_tenants() -> tuple[str, ...]:
    settings = services().settings
    cached = getattr(settings, "_tenants", None)
    if cached is None:
        cached = tuple(tenant_of(k) for k in settings.api_keys)
        object.__setattr__(settings, "_tenants", cached)
    return cached


def authenticate() -> str:
    """The tenant whose key is presented; compared in constant time against every key."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing bearer API key")
    presented = tenant_of(key.strip())
    match = ""
    for tenant in _known_tenants():
        if hmac.compare_digest(presented, tenant):
            match = tenant
    if not match:
        raise Unauthorized("invalid API key")
    return match


def require_key(view: Callable) -> Callable:
    @wraps(view)
    def wrapper(*args, **kwargs):
        g.tenant = authenticate()
        return view(*args, **kwargs)
    return wrapper
