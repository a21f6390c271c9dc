"""store/rate_limits.py and its Lua (rate_turn in store/lua/prelude.lua), on a real Redis:
sends spaced evenly, never more than the limit in any window, and a 429's pause holding every
sender back."""

from __future__ import annotations

import time
import uuid

import pytest

from store import keys
from store.rate_limits import Limit, RateLimiter, api_class

pytestmark = pytest.mark.fast


def limiter(redis, limit: str, api: str = keys.API) -> RateLimiter:
    """A limiter of an account of its own, with no margin, so that the windows are exact."""
    return RateLimiter(redis, "MA" + uuid.uuid4().hex[:18].upper(), {api: Limit.parse(limit)}, margin_s=0)


def ask(limits: RateLimiter, api: str = keys.API) -> int:
    """One turn asked of the script: 0 (go) or the milliseconds to wait."""
    limit = limits.limits[api]
    return limits.scripts(
        "rate_limit", keys.rate_limit(limits.account, api), limit.count, int(limit.window_s * 1000), uuid.uuid4().hex, 0
    )


@pytest.mark.parametrize("text, limit", [("300/5", Limit(300, 5.0)), ("2", Limit(2, 1.0)), ("1/0.5", Limit(1, 0.5))])
def test_a_limit_is_count_per_seconds(text, limit):
    assert Limit.parse(text) == limit


@pytest.mark.parametrize("text", ["0/1", "3/0", "3/-1", "x", "", "1/y"])
def test_a_limit_out_of_shape_is_refused(text):
    with pytest.raises(ValueError, match="COUNT/SECONDS"):
        Limit.parse(text)


def test_call_creation_is_limited_apart_from_every_other_api():
    assert api_class("POST", "Call/") == keys.CALLS
    assert {api_class("GET", "Call/"), api_class("POST", "Message/"), api_class("DELETE", "Call/x/")} == {keys.API}


def test_a_send_goes_at_once_and_the_next_one_waits_an_even_share_of_the_window(redis):
    limits = limiter(redis, "4/40")  # one send every 10 s
    assert ask(limits) == 0
    assert 0 < ask(limits) <= 10_000
    assert limiter(redis, "4/40").acquire(keys.API) == 0  # another account is not held back


def test_no_window_ever_holds_more_sends_than_the_limit(redis):
    limits = limiter(redis, "3/0.3")
    asked, granted = [], []  # each turn was granted between these two moments
    for _ in range(7):
        asked.append(time.monotonic())
        limits.acquire(keys.API)
        granted.append(time.monotonic())
    # Redis's clock decides; this process's may read up to a millisecond apart from it.
    assert all(granted[i + 3] - asked[i] >= 0.3 - 0.002 for i in range(len(asked) - 3)), (asked, granted)
    assert granted[-1] - asked[0] >= 0.6 - 0.002


def test_a_pause_holds_back_every_sender_of_the_class_and_only_that_class(redis):
    limits = limiter(redis, "100/1")
    limits.limits[keys.CALLS] = Limit(100, 1)
    limits.pause(keys.API, 10)
    assert 0 < ask(limits) <= 10_000  # no send yet: only the pause makes it wait
    assert ask(limits, keys.CALLS) == 0
