"""The Redis data model shared by web and worker: the only code that knows key names."""

from store.connection import connect
from store.records import RequestRecord, Requests

__all__ = ["connect", "RequestRecord", "Requests"]
