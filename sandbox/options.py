"""The sandbox's settings: read once from the environment, every default documented here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_BIND = "127.0.0.1:8010"
DEFAULT_AUTH_ID = "MASANDBOX00000000000"
DEFAULT_AUTH_TOKEN = "sandbox-auth-token"
DEFAULT_CALLBACK_DELAY = 0.05
CALLBACK_FORMATS = ("json", "form")


class ConfigError(ValueError):
    """An environment variable holds a value the sandbox cannot run with."""


@dataclass(frozen=True)
class Config:
    """Everything the sandbox can be told from outside.

    bind: HOST:PORT gunicorn listens on (SANDBOX_BIND).
    auth_id: the one account's auth id, 20 characters starting MA or SA like Plivo's
        (SANDBOX_AUTH_ID).
    auth_token: its auth token; Basic auth password and callback signing key
        (SANDBOX_AUTH_TOKEN).
    callback_delay: seconds between answering an asynchronous request and delivering
        its callback, unless the callback_delay fault says otherwise
        (SANDBOX_CALLBACK_DELAY).
    callback_format: body of POST callbacks, "json" or "form" (SANDBOX_CALLBACK_FORMAT).
    """

    bind: str = DEFAULT_BIND
    auth_id: str = DEFAULT_AUTH_ID
    auth_token: str = DEFAULT_AUTH_TOKEN
    callback_delay: float = DEFAULT_CALLBACK_DELAY
    callback_format: str = "json"

    def __post_init__(self) -> None:
        if len(self.auth_id) != 20 or self.auth_id[:2] not in ("MA", "SA"):
            raise ConfigError("SANDBOX_AUTH_ID must be 20 characters starting with MA or SA")
        if not self.auth_token:
            raise ConfigError("SANDBOX_AUTH_TOKEN must not be empty")
        if not self.callback_delay >= 0:
            raise ConfigError("SANDBOX_CALLBACK_DELAY must be a number of seconds >= 0")
        if self.callback_format not in CALLBACK_FORMATS:
            raise ConfigError("SANDBOX_CALLBACK_FORMAT must be 'json' or 'form'")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Config:
        return cls(
            bind=environ.get("SANDBOX_BIND", DEFAULT_BIND),
            auth_id=environ.get("SANDBOX_AUTH_ID", DEFAULT_AUTH_ID),
            auth_token=environ.get("SANDBOX_AUTH_TOKEN", DEFAULT_AUTH_TOKEN),
            callback_delay=_seconds(environ.get("SANDBOX_CALLBACK_DELAY")),
            callback_format=environ.get("SANDBOX_CALLBACK_FORMAT", "json").strip().lower(),
        )


def _seconds(text: str | None) -> float:
    if text is None or not text.strip():
        return DEFAULT_CALLBACK_DELAY
    try:
        return float(text)
    except ValueError:
        raise ConfigError("SANDBOX_CALLBACK_DELAY must be a number of seconds >= 0") from None
