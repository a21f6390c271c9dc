"""The account's objects, in memory, behind one lock.

Objects are never mutated in place (an update stores a new dict), so a reader
can serialise what it got after the lock is released.
"""

from __future__ import annotations

import threading
import uuid
from itertools import islice
from typing import Any

from sandbox.api_errors import NotFound
from sandbox.resource import ResourcePath

Object = dict[str, Any]
PROTECTED_FIELDS = ("api_id", "id", "resource_uri")


class ObjectStore:
    def __init__(self, auth_id: str):
        self._auth_id = auth_id
        self._lock = threading.Lock()
        self._objects: dict[ResourcePath, Object] = {}
        self._collections: dict[ResourcePath, dict[str, None]] = {}
        self.clear()

    def clear(self) -> None:
        """Forget every object; only the account itself remains."""
        account = ResourcePath(())
        with self._lock:
            self._objects = {account: {"auth_id": self._auth_id, "resource_uri": account.url(self._auth_id)}}
            self._collections = {}

    def create(self, collection: ResourcePath, fields: Object) -> str:
        object_id = str(uuid.uuid4())
        path = collection.child(object_id)
        stored = {**_writable(fields), "id": object_id, "resource_uri": path.url(self._auth_id)}
        with self._lock:
            self._require(collection.parent)
            self._objects[path] = stored
            self._collections.setdefault(collection, {})[object_id] = None
        return object_id

    def update(self, path: ResourcePath, fields: Object) -> None:
        changes = _writable(fields)
        with self._lock:
            self._objects[path] = {**self._require(path), **changes}

    def get(self, path: ResourcePath) -> Object:
        with self._lock:
            return self._require(path)

    def delete(self, path: ResourcePath) -> None:
        with self._lock:
            self._require(path)
            del self._objects[path]
            self._collections.get(path.parent, {}).pop(path.name, None)

    def delete_all(self, collection: ResourcePath) -> int:
        """Empty a collection (Plivo's DELETE Call/{uuid}/Record/ stops every recording)."""
        with self._lock:
            self._require(collection.parent)
            members = self._collections.pop(collection, {})
            for object_id in members:
                del self._objects[collection.child(object_id)]
        return len(members)

    def page(self, collection: ResourcePath, limit: int, offset: int) -> tuple[int, list[Object]]:
        """Total size and one window of the collection, newest first like Plivo's lists."""
        with self._lock:
            self._require(collection.parent)
            members = self._collections.get(collection, {})
            window = islice(reversed(members), offset, offset + limit)
            return len(members), [self._objects[collection.child(object_id)] for object_id in window]

    def _require(self, path: ResourcePath) -> Object:
        """The object at path; gone too when any object above it was deleted."""
        try:
            for depth in range(0, len(path.segments), 2):
                self._objects[ResourcePath(path.segments[:depth])]
            return self._objects[path]
        except KeyError:
            raise NotFound() from None


def _writable(fields: Object) -> Object:
    """The sandbox owns ids and links; api_id belongs to answers, never to objects."""
    return {key: value for key, value in fields.items() if key not in PROTECTED_FIELDS}
