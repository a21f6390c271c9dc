"""What the simulated API answers: a status, a JSON body (or none) and extra headers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any


def new_api_id() -> str:
    """Plivo stamps every answer with a fresh api_id; so does the sandbox."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, status: int, **fields: Any) -> Reply:
        """A JSON answer carrying a fresh api_id before the given fields."""
        return cls(status, {"api_id": new_api_id(), **fields})

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300
