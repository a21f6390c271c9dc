"""The upstream's rate limits, shared in Redis by every worker process on every machine."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from redis import Redis

from store import keys
from store.partitions import ONE, Partitions
from store.scripts import Scripts


def api_class(method: str, path: str) -> str:
    """Plivo limits call creation apart from every other API (Plivo's API reference, rate limits:
    2 calls per second, 300 requests per 5 seconds for the rest)."""
    return keys.CALLS if method == "POST" and path == "Call/" else keys.API


@dataclass(frozen=True)
class Limit:
    count: int
    window_s: float

    @classmethod
    def parse(cls, text: str) -> Limit:
        """ "300/5" is 300 requests in any 5 seconds."""
        count, _, window = text.partition("/")
        try:
            limit = cls(int(count), float(window or 1))
        except ValueError:
            limit = cls(0, 0)
        if limit.count < 1 or limit.window_s <= 0:
            raise ValueError(f"a rate limit is COUNT/SECONDS, not {text!r}")
        return limit


class RateLimiter:
    """At most `limit.count` sends in any `limit.window_s` per account and API class;
    a 429 pauses every worker on that class. Each (account, class) limiter is one log in one
    partition, `home(account:class)`: every worker takes its turns there, so the limit holds
    over all of them whatever partition the request sent lives in."""

    def __init__(
        self,
        redis: Redis,
        account: str,
        limits: dict[str, Limit],
        margin_s: float = 0.1,
        direct: bool = False,
        *,
        partitions: Partitions = ONE,
    ) -> None:
        self.redis = redis
        self.account = account
        self.limits = limits
        self.margin_ms = int(margin_s * 1000)
        self.scripts = Scripts(redis, direct)
        self.partitions = partitions

    def prefix(self, api_class: str) -> str:
        """The partition the (account, class) limiter lives in."""
        return self.partitions.prefix(self.partitions.home(f"{self.account}:{api_class}"))

    def key(self, api_class: str) -> str:
        return keys.at(self.prefix(api_class), keys.rate_limit(self.account, api_class))

    def acquire(
        self, api_class: str, mark_sending: Callable[..., int] | None = None, at: str = keys.PREFIX
    ) -> float | None:
        """Block until this send may go; answers the seconds it waited. The window is
        widened by a small margin against network jitter between here and the upstream.
        With `mark_sending` (Outbox.mark_sending bound to one request, which lives in the
        partition `at`) the request is marked sending once the turn is granted; then None means
        the request is no longer queued and must not be sent. When the limiter lives in the
        request's partition (always with one), the script that marks the request takes the
        turn too, one round trip per send; otherwise the turn is taken first in the limiter's
        partition, then the mark in the request's: a turn whose request turns out not to be
        sendable is spent unused, which keeps the limit (it only ever errs on fewer sends)."""
        limit = self.limits[api_class]
        prefix = self.prefix(api_class)
        key = keys.at(prefix, keys.rate_limit(self.account, api_class))
        together = mark_sending is not None and prefix == at
        member = uuid.uuid4().hex
        started = time.monotonic()
        while True:
            waited_ms = int((time.monotonic() - started) * 1000)
            turn = (key, limit.count, int(limit.window_s * 1000) + self.margin_ms, member, waited_ms)
            if mark_sending is None or not together:
                wait_ms = cast(int, self.scripts("rate_limit", *turn, at=prefix))
            else:
                answer = mark_sending(*turn)
                if answer == 0:
                    return None
                wait_ms = max(0, -answer)
            if wait_ms == 0:
                if mark_sending is not None and not together and mark_sending() == 0:
                    return None
                return waited_ms / 1000
            time.sleep(min(wait_ms, 1000) / 1000)

    def pause(self, api_class: str, seconds: float) -> None:
        """The upstream said 429: hold every worker back on this class for `seconds`."""
        key = self.key(api_class) + ":pause"
        self.redis.set(key, "1", px=max(1, int(seconds * 1000)))
