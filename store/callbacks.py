"""The web side's store for callback deliveries: keep, then match."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from redis import Redis

from store.connection import now_ms
from store.scripts import Scripts


class Deliveries:
    """Callback deliveries, matched to their request in one atomic step."""

    def __init__(self, redis: Redis, result_ttl: int, orphan_ttl: int) -> None:
        self.redis = redis
        self.result_ttl = result_ttl
        self.orphan_ttl = orphan_ttl
        self.scripts = Scripts(redis)

    def store(self, rid: str, api_id: str, body: dict[str, Any], method: str) -> str:
        """Keep one delivery and answer its outcome: matched, early, duplicate or late."""
        now = now_ms()
        canonical = json.dumps(body, separators=(",", ":"), sort_keys=True)
        digest = hashlib.sha256(f"{api_id}\n{canonical}".encode()).hexdigest()
        delivery = json.dumps({"received_at": now, "method": method, "api_id": api_id, "body": body},
                              separators=(",", ":"))
        return self.scripts("match_callback", rid, api_id, delivery, canonical, digest, now,
                            self.result_ttl, self.orphan_ttl)
