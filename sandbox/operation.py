"""What the simulated API does with a request, and the answer a synchronous caller gets.

Generic on purpose: any collection accepts any JSON object; only `Call/` and
`Message/` word their creation answers the way Plivo does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.api_errors import MethodNotAllowed, NotFound
from sandbox.objects import ObjectStore
from sandbox.pagination import Window
from sandbox.reply import Reply
from sandbox.resource import ResourcePath

CREATION_ANSWERS: dict[str, Callable[[str], dict[str, Any]]] = {
    "Call": lambda object_id: {"message": "call fired", "request_uuid": object_id},
    "Message": lambda object_id: {"message": "message(s) queued", "message_uuid": [object_id]},
}


class Operation:
    """Binds the store and the account so each request needs only method, path, arguments."""

    def __init__(self, store: ObjectStore, auth_id: str):
        self.store = store
        self.auth_id = auth_id

    def perform(self, method: str, path: ResourcePath, args: dict[str, Any]) -> Reply:
        if method == "POST":
            return self._create(path, args) if path.is_collection else self._change(path, args)
        if method == "DELETE":
            return self._empty(path) if path.is_collection else self._delete(path)
        return self._list(path, args) if path.is_collection else self._read(path)

    def _create(self, collection: ResourcePath, fields: dict[str, Any]) -> Reply:
        object_id = self.store.create(collection, fields)
        if collection.parent.is_account and collection.name in CREATION_ANSWERS:
            return Reply.of(201, **CREATION_ANSWERS[collection.name](object_id))
        return Reply.of(201, message="created", id=object_id)

    def _change(self, path: ResourcePath, fields: dict[str, Any]) -> Reply:
        self.store.update(path, fields)
        return Reply.of(202, message="changed")

    def _list(self, collection: ResourcePath, args: dict[str, Any]) -> Reply:
        window = Window.from_args(args)
        total, objects = self.store.page(collection, window.limit, window.offset)
        return Reply.of(200, meta=window.meta(total, collection.url(self.auth_id)), objects=objects)

    def _read(self, path: ResourcePath) -> Reply:
        return Reply.of(200, **self.store.get(path))

    def _delete(self, path: ResourcePath) -> Reply:
        if path.is_account:
            raise MethodNotAllowed("the account cannot be deleted")
        self.store.delete(path)
        return Reply(204)

    def _empty(self, collection: ResourcePath) -> Reply:
        if not self.store.delete_all(collection):
            raise NotFound()
        return Reply(204)
