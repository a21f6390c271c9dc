"""Answerback from Python: submit upstream requests, wait for their callbacks, list, bulk.

from answerback_client import Client
with Client("http://127.0.0.1:8000", api_key=KEY) as ab:
    done = ab.submit("POST", "Call/", {"to": "14155550101", ...}).wait(timeout=30)
"""

from answerback_client.aio import AsyncClient, AsyncRequest
from answerback_client.base import VERSION as __version__
from answerback_client.client import Client, Request
from answerback_client.errors import AnswerbackError, Conflict, InvalidRequest, NotFound, Unauthorized, Unavailable
from answerback_client.records import FINAL_STATUSES, BulkRetry, Delivery, Event, Record, Timeline

__all__ = [
    "AnswerbackError",
    "AsyncClient",
    "AsyncRequest",
    "BulkRetry",
    "Client",
    "Conflict",
    "Delivery",
    "Event",
    "FINAL_STATUSES",
    "InvalidRequest",
    "NotFound",
    "Record",
    "Request",
    "Timeline",
    "Unauthorized",
    "Unavailable",
    "__version__",
]
