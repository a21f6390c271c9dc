"""Delayed work on one thread: a heap of due times watched under a condition.

At hundreds of callbacks per second with delays of seconds, a sleeping thread
per callback would mean thousands of threads; one timer hands each due item on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Timer:
    def __init__(self, fire: Callable[[Any], object], name: str = "sandbox-timer"):
        self._fire = fire
        self._name = name
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, delay: float, item: Any) -> None:
        """Hand `item` to `fire` after `delay` seconds; the thread starts on first use (after any fork)."""
        with self._condition:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), item))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._condition.notify()

    def __len__(self) -> int:
        with self._condition:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            item = self._next_due()
            try:
                self._fire(item)
            except Exception:
                log.exception("timer could not hand on a due item")

    def _next_due(self) -> Any:
        with self._condition:
            while True:
                if not self._heap:
                    self._condition.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait <= 0:
                    return heapq.heappop(self._heap)[2]
                self._condition.wait(wait)
