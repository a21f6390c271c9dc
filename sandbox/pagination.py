"""Plivo's offset pagination: `limit` 1..20 (default 20), `offset` counted in objects."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.api_errors import BadRequest

MAX_LIMIT = 20
_DIGITS = re.compile(r"[0-9]+")
LIMIT_ERROR = f"limit must be an integer from 1 to {MAX_LIMIT}"
OFFSET_ERROR = "offset must be an integer of 0 or more"


@dataclass(frozen=True)
class Window:
    limit: int = MAX_LIMIT
    offset: int = 0

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> Window:
        limit = _integer(args.get("limit"), MAX_LIMIT, LIMIT_ERROR)
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(LIMIT_ERROR)
        return cls(limit, _integer(args.get("offset"), 0, OFFSET_ERROR))

    def meta(self, total: int, collection_url: str) -> dict[str, Any]:
        """The list answer's `meta`: next/previous are links, null at either end."""
        following = self.offset + self.limit
        previous = max(self.offset - self.limit, 0)
        return {
            "limit": self.limit,
            "offset": self.offset,
            "total_count": total,
            "next": self._link(collection_url, following) if following < total else None,
            "previous": self._link(collection_url, previous) if self.offset > 0 else None,
        }

    def _link(self, collection_url: str, offset: int) -> str:
        return f"{collection_url}?limit={self.limit}&offset={offset}"


def _integer(text: Any, default: int, error: str) -> int:
    if text is None:
        return default
    if not isinstance(text, str) or not _DIGITS.fullmatch(text):
        raise BadRequest(error)
    return int(text)
