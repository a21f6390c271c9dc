"""When to try a request again: exponential backoff with full jitter, honouring Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

BASE_S = 0.5
CAP_S = 30.0


def retry_delay(attempt: int, retry_after: str | None = None, rng: random.Random | None = None) -> float:
    """Seconds before attempt `attempt + 1`; a Retry-After from the upstream is a floor."""
    ceiling = min(CAP_S, BASE_S * 2 ** max(0, attempt - 1))
    delay = (rng or random).uniform(0, ceiling)
    floor = parse_retry_after(retry_after)
    return max(delay, floor) if floor is not None else delay


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), 3600.0)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(max(0.0, (moment - datetime.now(UTC)).total_seconds()), 3600.0)
