"""HTTP Basic authentication against the one account the sandbox simulates."""

from __future__ import annotations

from hmac import compare_digest

from werkzeug.datastructures import Authorization

from sandbox.options import Config


def has_valid_credentials(authorization: Authorization | None, config: Config) -> bool:
    """Constant-time, like a real API should, so tests never depend on timing."""
    if authorization is None or authorization.type != "basic":
        return False
    username = (authorization.username or "").encode()
    password = (authorization.password or "").encode()
    return compare_digest(username, config.auth_id.encode()) & compare_digest(password, config.auth_token.encode())
