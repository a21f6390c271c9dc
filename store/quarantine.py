"""The quarantine: callbacks the webhook refused for a reason that may be our own
misconfiguration (a signature checked against the wrong PUBLIC_URL or token, a shape the
checks do not know), kept whole so that they can be verified again once the settings are
right. Plivo never sends a refused callback again: without this, its result would be gone.

Three keys (store/keys.py): a sorted set of entry ids by when they were kept, a hash of the
entries, and the bytes they count; and two more for those whose `rid` named no request when
they were kept (their ids by when, their bytes). An entry is one string: its description as
JSON, a newline, then the body as received (its text, or Base64 when it is not UTF-8), so a
page of descriptions is read without the bodies (lua/quarantine_page.lua). Entries are kept
`ttl_s` seconds and `max_bytes` in all, each counted as its length plus ENTRY_OVERHEAD (what
Redis spends on it besides, measured in docs/operations.md), plus UNKNOWN_OVERHEAD for one
naming no request. Past the bound, those naming no request go first, then the others, the
oldest first within each: anyone can forge the first kind, but only Plivo is handed the rids
of requests, so a flood of forgeries cannot push out the genuine callbacks a misconfiguration
refused. Each one dropped is counted (lua/quarantine_keep.lua).

The quarantine is one structure: with several partitions (store/partitions.py) its keys are in
one of them, that of `home("quarantine")`. A refusal naming a request is that request's event,
in the request's partition: added there first (lua/quarantine_event.lua), which tells whether
the rid names a request, and whose, before the entry is kept.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis
from redis.exceptions import LockError

from store import keys
from store.connection import now_ms
from store.partitions import ONE, Partitions
from store.scripts import Scripts

ENTRY_OVERHEAD = 256  # bytes counted for each entry beside its own length
UNKNOWN_OVERHEAD = 128  # and for one naming no request: its id in a second sorted set (about 117 bytes)
BASE64 = "base64"  # the description's body_encoding for a body that is not UTF-8


@dataclass
class Quarantined:
    """One kept callback: its id, its description (when, why, and the request line and
    headers it came with) and its body as received."""

    id: str
    description: dict[str, Any]
    body: bytes


class Quarantine:
    def __init__(self, redis: Redis, ttl_s: int, max_bytes: int, partitions: Partitions = ONE) -> None:
        self.redis = redis
        self.ttl_ms = ttl_s * 1000
        self.max_bytes = max_bytes
        self.partitions = partitions
        self.at = partitions.prefix(partitions.home("quarantine"))  # the quarantine's partition
        self.scripts = Scripts(redis)

    def _key(self, name: str) -> str:
        return keys.at(self.at, name)

    def keep(self, description: dict[str, Any], body: bytes, signature: str = "") -> bool:
        """Keep one refused callback and count its refusal (`rejected_<reason>`), in one round
        trip (two with several partitions, when it names a request); answers whether it was
        kept (not when it alone is larger than the bound). A refusal naming a known request
        (`rid`) is also one of its events (store/events.py), with `signature` ("invalid",
        "valid", "unchecked"; "" when not checked yet)."""
        try:
            text, encoding = body.decode(), ""
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(body).decode(), BASE64
        now = now_ms()
        described = {**description, "at": now, "body_encoding": encoding}
        entry = json.dumps(described, separators=(",", ":")) + "\n" + text
        args: tuple[str | int, ...] = (
            entry,
            now,
            self.ttl_ms,
            self.max_bytes,
            ENTRY_OVERHEAD,
            description["reason"],
            description.get("rid", ""),
            description.get("method", ""),
            signature,
            description.get("size", 0),
            UNKNOWN_OVERHEAD,
        )
        if self.partitions.count > 1:  # the request's event in its partition, then the entry here
            rid = description.get("rid", "")
            tenant = ""
            if rid:
                event = (rid, now, description.get("method", ""), signature, description.get("size", 0))
                found = self.scripts.once("quarantine_event", *event, description["reason"], at=self.partitions.at(rid))
                tenant = cast(str, found)
            args += (tenant,)
        return bool(self.scripts.once("quarantine_keep", *args, at=self.at))

    def page(self, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """(entries kept, one page of their descriptions, newest first, each with its id and
        `known_request`: whether its rid named a request when it was kept)."""
        total, *found = cast(
            list[Any], self.scripts("quarantine_page", now_ms(), self.ttl_ms, offset, limit, at=self.at)
        )
        return int(total), [
            {"id": id, **json.loads(text), "known_request": bool(known)}
            for id, text, known in zip(found[::3], found[1::3], found[2::3], strict=True)
        ]

    def size(self) -> int:
        """Entries kept (younger than the TTL)."""
        return int(self.redis.zcount(self._key(keys.QUARANTINE), f"({now_ms() - self.ttl_ms}", "+inf"))

    def ids(self) -> list[str]:
        """Every entry's id, oldest first."""
        return cast(
            list[str], self.redis.zrangebyscore(self._key(keys.QUARANTINE), f"({now_ms() - self.ttl_ms}", "+inf")
        )

    def entries(self, ids: list[str]) -> Iterator[Quarantined]:
        """The entries of `ids` still kept."""
        for id, entry in zip(
            ids, self.redis.hmget(self._key(keys.QUARANTINE_ENTRIES), ids) if ids else [], strict=True
        ):
            if entry is not None:
                yield _parsed(id, cast(str, entry))

    def remove(self, id: str, outcome: str) -> bool:
        """Take out an entry that was applied with `outcome`; answers False if another
        re-check took it out first (its outcome is counted once)."""
        return bool(self.scripts("quarantine_remove", id, ENTRY_OVERHEAD, outcome, UNKNOWN_OVERHEAD, at=self.at))

    @contextmanager
    def recheck_lock(self, timeout_s: float) -> Iterator[bool]:
        """Whether this process holds the re-check lock (at most `timeout_s`), for the block."""
        lock = self.redis.lock(keys.QUARANTINE_LOCK, timeout=timeout_s, blocking=False)
        held = lock.acquire()
        try:
            yield held
        finally:
            if held:
                try:
                    lock.release()
                except LockError:  # it expired meanwhile: another process may hold it now
                    pass


def _parsed(id: str, entry: str) -> Quarantined:
    head, _, text = entry.partition("\n")
    description = json.loads(head)
    try:
        body = base64.b64decode(text) if description.get("body_encoding") == BASE64 else text.encode()
    except binascii.Error:
        body = b""
    return Quarantined(id, description, body)
