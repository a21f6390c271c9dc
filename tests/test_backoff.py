"""workers/backoff.py: when a send is tried again (exponential backoff with full jitter), and
the upstream's Retry-After as a floor."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from workers.backoff import BASE_S, CAP_S, parse_retry_after, retry_delay

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10, 60])
def test_the_delay_is_jittered_below_a_ceiling_that_doubles_up_to_the_cap(attempt):
    ceiling = min(CAP_S, BASE_S * 2 ** max(0, attempt - 1))
    rng = random.Random(attempt)
    delays = [retry_delay(attempt, rng=rng) for _ in range(2000)]
    assert all(0 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling * 0.9 and min(delays) < ceiling * 0.1  # full jitter: the whole range


def test_retry_after_is_a_floor_never_a_ceiling():
    rng = random.Random(1)
    assert all(retry_delay(1, "7", rng) == 7.0 for _ in range(100))  # above the ceiling of 0.5 s
    assert all(retry_delay(10, "0", rng) >= 0 for _ in range(100))


@pytest.mark.parametrize(
    "value, seconds",
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        (" 12 ", 12.0),
        ("999999", 3600.0),
    ],
)
def test_retry_after_in_seconds_is_read_and_capped_at_an_hour(value, seconds):
    assert parse_retry_after(value) == seconds


def test_retry_after_as_a_date_counts_from_now_and_never_below_zero():
    later = parse_retry_after(format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True))
    assert 80 <= later <= 90
    assert parse_retry_after(format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2099 07:28:00 GMT") == 3600.0
