"""Where a request points inside the account: a collection or one object in it.

Plivo's paths alternate collection and object: `Call/` is a collection,
`Call/{uuid}/` an object, `Call/{uuid}/Record/` a collection under it. So an odd
number of segments names a collection and an even number an object; the empty
path is the account itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourcePath:
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> ResourcePath:
        """Accept the path with or without its trailing slash."""
        return cls(tuple(segment for segment in text.split("/") if segment))

    @property
    def is_collection(self) -> bool:
        return len(self.segments) % 2 == 1

    @property
    def is_account(self) -> bool:
        return not self.segments

    @property
    def parent(self) -> ResourcePath:
        return ResourcePath(self.segments[:-1])

    @property
    def name(self) -> str:
        """The collection's name for a collection (`Call`), the id for an object."""
        return self.segments[-1] if self.segments else ""

    def child(self, segment: str) -> ResourcePath:
        return ResourcePath((*self.segments, segment))

    @property
    def key(self) -> str:
        """Canonical relative form, `Call/abc/`; empty for the account."""
        return "".join(segment + "/" for segment in self.segments)

    def url(self, auth_id: str) -> str:
        return f"/v1/Account/{auth_id}/{self.key}"
