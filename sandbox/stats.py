"""Counters and the request log that tests read to see what the sandbox went through."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from itertools import islice
from typing import Any

from sandbox.visit import Visit

LOG_SIZE = 10_000
DELIVERY_LOG_SIZE = 100_000
RESET = "reset"


class Stats:
    def __init__(self, log_size: int = LOG_SIZE):
        self._lock = threading.Lock()
        self._log: deque[dict[str, Any]] = deque(maxlen=log_size)
        self._deliveries: deque[dict[str, Any]] = deque(maxlen=DELIVERY_LOG_SIZE)
        self._pending = 0
        self.clear()

    def clear(self) -> None:
        """Zero the counters and the log; `pending` is a live gauge and stays."""
        with self._lock:
            self._log.clear()
            self._deliveries.clear()
            self._requests: Counter[str] = Counter()
            self._by_rid: Counter[str] = Counter()
            self._acted_by_rid: Counter[str] = Counter()
            self._callbacks: Counter[str] = Counter()
            self._callback_status: Counter[str] = Counter()
            self._callback_errors: Counter[str] = Counter()

    def record_request(self, visit: Visit, status: int | None, api_id: str | None, acted: bool) -> None:
        """Count a request once its outcome is decided; status None means the connection was reset."""
        entry = visit.to_json(status, api_id, acted)
        with self._lock:
            self._log.append(entry)
            self._requests[str(status) if status is not None else RESET] += 1
            if visit.rid is not None:
                self._by_rid[visit.rid] += 1
                self._acted_by_rid[visit.rid] += acted

    def callback_dropped(self) -> None:
        with self._lock:
            self._callbacks["dropped"] += 1

    def callback_planned(self) -> None:
        with self._lock:
            self._callbacks["planned"] += 1
            self._pending += 1

    def callback_retried(self) -> None:
        with self._lock:
            self._callbacks["retries"] += 1

    def callback_finished(
        self, status: int | None, error: str | None, rid: str | None = None, api_id: str | None = None
    ) -> None:
        """A delivery is over: answered (any status) or given up with a transport error."""
        with self._lock:
            self._deliveries.append(
                {"time": time.time(), "rid": rid, "api_id": api_id, "status": status, "error": error}
            )
            self._pending -= 1
            self._callbacks["delivered" if status is not None and 200 <= status < 300 else "failed"] += 1
            if status is not None:
                self._callback_status[str(status)] += 1
            if error is not None:
                self._callback_errors[error] += 1

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            callbacks = {key: self._callbacks[key] for key in ("planned", "delivered", "failed", "dropped", "retries")}
            return {
                "requests": {"total": sum(self._requests.values()), "by_status": dict(self._requests)},
                "callbacks": {
                    **callbacks,
                    "pending": self._pending,
                    "by_status": dict(self._callback_status),
                    "errors": dict(self._callback_errors),
                },
                "by_rid": dict(self._by_rid),
                "acted_by_rid": dict(self._acted_by_rid),
            }

    def deliveries(self, limit: int) -> list[dict[str, Any]]:
        """The last `limit` callback deliveries, oldest first: what the receiver acknowledged."""
        with self._lock:
            return list(self._deliveries)[-limit:]

    def requests(self, limit: int, rid: str | None = None) -> list[dict[str, Any]]:
        """The last `limit` logged requests (of one rid if given), oldest first."""
        with self._lock:
            newest_first = (entry for entry in reversed(self._log) if rid is None or entry["rid"] == rid)
            chosen = list(islice(newest_first, limit))
        chosen.reverse()
        return chosen
