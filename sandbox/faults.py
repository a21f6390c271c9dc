"""Fault switches: how often, and where, the sandbox misbehaves; changed at runtime over HTTP.

Every fault has a `rate` (probability 0..1, default 0 = off) and optional
`paths` (glob patterns over the path below /v1/Account/{id}/, e.g. "Call/" or
"Call/*") and `methods` filters; some have options of their own (FAULT_OPTIONS).
The settings are an immutable snapshot swapped under a lock, so rolling the dice
on the request path takes no lock at all.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from http.client import responses
from typing import Any

from sandbox.api_errors import ApiError, BadRequest

FAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "callback_delay": {"seconds": 1.0},
    "early_callback": {},
    "duplicate_callback": {},
    "drop_callback": {},
    "fresh_connection": {},
    "status_429": {"retry_after": None},
    "status_5xx": {"status": 500},
    "status_4xx": {"error": "invalid request (sandbox fault)"},
    "slow_answer": {"seconds": 10.0},
    "reset_after_receive": {},
}
REFUSALS = ("status_429", "status_5xx", "status_4xx")
CALLBACK_FAULTS = ("callback_delay", "early_callback", "duplicate_callback", "drop_callback", "fresh_connection")
AFTERMATH = ("slow_answer", "reset_after_receive")
METHODS = ("GET", "POST", "DELETE")
COMMON_FIELDS = ("rate", "paths", "methods", "times")


@dataclass(frozen=True)
class Fault:
    rate: float = 0.0
    paths: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    times: int | None = None  # fire at most this many more times (None: no end)
    options: Mapping[str, Any] = field(default_factory=dict)

    def fires(self, method: str, path: str) -> bool:
        return (
            self.rate > 0
            and (self.methods is None or method in self.methods)
            and (self.paths is None or any(fnmatchcase(path, pattern) for pattern in self.paths))
            and random.random() < self.rate
        )

    def draw_seconds(self) -> float:
        seconds = self.options["seconds"]
        return random.uniform(*seconds) if isinstance(seconds, list) else seconds

    def merged(self, name: str, change: Any) -> Fault:
        """This fault with `change` applied; a bare number is shorthand for the rate."""
        if isinstance(change, (int, float)) and not isinstance(change, bool):
            change = {"rate": change}
        if not isinstance(change, dict):
            raise BadRequest(f"{name} must be a JSON object or a rate")
        unknown = set(change) - set(COMMON_FIELDS) - set(FAULT_OPTIONS[name])
        if unknown:
            raise BadRequest(f"{name} has no setting {sorted(unknown)[0]!r}")
        common: dict[str, Any] = {
            key: _VALIDATORS[key](f"{name}.{key}", change[key]) for key in COMMON_FIELDS if key in change
        }
        options = {
            key: _VALIDATORS[key](f"{name}.{key}", value) for key, value in change.items() if key not in COMMON_FIELDS
        }
        return replace(self, **common, options={**self.options, **options})

    def to_json(self) -> dict[str, Any]:
        paths = list(self.paths) if self.paths is not None else None
        methods = list(self.methods) if self.methods is not None else None
        return {"rate": self.rate, "paths": paths, "methods": methods, "times": self.times, **self.options}


class FaultBoard:
    """The live fault settings of one sandbox process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults = _defaults()
        self._left: dict[str, int] = {}

    def to_json(self) -> dict[str, Any]:
        return {name: fault.to_json() for name, fault in self._faults.items()}

    def merge(self, changes: Any) -> None:
        """Apply all changes or none: a bad setting leaves the board as it was."""
        if not isinstance(changes, dict):
            raise BadRequest("faults must be a JSON object")
        with self._lock:
            faults = dict(self._faults)
            for name, change in changes.items():
                if name not in faults:
                    raise BadRequest(f"unknown fault {name!r}; known: {', '.join(FAULT_OPTIONS)}")
                faults[name] = faults[name].merged(name, change)
            self._faults = faults
            self._left = {name: fault.times for name, fault in faults.items() if fault.times is not None}

    def reset(self) -> None:
        with self._lock:
            self._faults = _defaults()
            self._left = {}

    def roll(self, names: Iterable[str], method: str, path: str) -> dict[str, Fault]:
        """The faults among `names` that fire for this request."""
        faults = self._faults
        return {
            name: faults[name] for name in names if faults[name].fires(method, path) and self._use(name, faults[name])
        }

    def _use(self, name: str, fault: Fault) -> bool:
        """A fault limited by `times` fires only while it has times left."""
        if fault.times is None:
            return True
        with self._lock:
            left = self._left.get(name, 0)
            if left > 0:
                self._left[name] = left - 1
            return left > 0


def refusal(fired: Mapping[str, Fault]) -> tuple[str, ApiError] | None:
    """The first refusing fault that fired, and the error it answers instead of acting."""
    for name in REFUSALS:
        if name in fired:
            return name, _REFUSERS[name](fired[name].options)
    return None


def _too_many_requests(options: Mapping[str, Any]) -> ApiError:
    retry_after = options["retry_after"]
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return ApiError("too many requests", 429, headers)


def _server_error(options: Mapping[str, Any]) -> ApiError:
    status = options["status"]
    status = random.choice(status) if isinstance(status, list) else status
    return ApiError(responses.get(status, "server error").lower(), status)


_REFUSERS = {
    "status_429": _too_many_requests,
    "status_5xx": _server_error,
    "status_4xx": lambda options: ApiError(options["error"], 400),
}


def _defaults() -> dict[str, Fault]:
    return {name: Fault(options=dict(options)) for name, options in FAULT_OPTIONS.items()}


def _number(where: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadRequest(f"{where} must be a number from {low:g} to {high:g}")
    return float(value)


def _rate(where: str, value: Any) -> float:
    return _number(where, value, 0, 1)


def _seconds(where: str, value: Any) -> float | list[float]:
    """A fixed number of seconds, or [min, max] for a uniform draw."""
    if isinstance(value, list) and len(value) == 2:
        low, high = (_number(where, item, 0, 3600) for item in value)
        if low <= high:
            return [low, high]
    elif not isinstance(value, list):
        return _number(where, value, 0, 3600)
    raise BadRequest(f"{where} must be seconds or [min, max] with min <= max")


def _patterns(where: str, value: Any) -> tuple[str, ...] | None:
    """Glob patterns over the account-relative path; "Call" means exactly "Call/"."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest(f"{where} must be null or a list of path patterns")
    return tuple(_pattern(item) for item in value)


def _pattern(text: str) -> str:
    text = text.lstrip("/")
    return text if not text or text.endswith(("/", "*")) else text + "/"


def _methods(where: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) and item.upper() in METHODS for item in value):
        raise BadRequest(f"{where} must be null or a list of {', '.join(METHODS)}")
    return tuple(item.upper() for item in value)


def _times(where: str, value: Any) -> int | None:
    return None if value is None else int(_number(where, value, 0, 1_000_000))


def _retry_after(where: str, value: Any) -> int | str | None:
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    return int(_number(where, value, 0, 86400))


def _server_status(where: str, value: Any) -> int | list[int]:
    """One 5xx status, or a list to pick from at random."""
    statuses = value if isinstance(value, list) and value else [value]
    if not all(isinstance(item, int) and not isinstance(item, bool) and 500 <= item <= 599 for item in statuses):
        raise BadRequest(f"{where} must be a status from 500 to 599 or a list of them")
    return value


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{where} must be a non-empty string")
    return value


_VALIDATORS = {
    "rate": _rate,
    "paths": _patterns,
    "methods": _methods,
    "times": _times,
    "seconds": _seconds,
    "retry_after": _retry_after,
    "status": _server_status,
    "error": _text,
}
