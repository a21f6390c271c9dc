"""Wake the clients that wait on a request the moment it finishes.

One Redis pub/sub subscription per process feeds in-process events, so any
number of waiting clients costs one connection and no polling of Redis
beyond a slow safety re-check.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from redis import Redis
from redis.exceptions import RedisError

from store import keys

log = logging.getLogger(__name__)


class DoneListener:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = {}
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def watching(self, rid: str) -> Iterator[threading.Event]:
        """An event set when `rid` finishes; register before reading the record."""
        self._ensure_running()
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(rid, set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                group = self._waiters.get(rid, set())
                group.discard(event)
                if not group:
                    self._waiters.pop(rid, None)

    def _ensure_running(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._subscribed.clear()
            self._thread = threading.Thread(target=self._run, name="done-listener", daemon=True)
            self._thread.start()
        self._subscribed.wait(timeout=2)

    def _run(self) -> None:
        while True:
            try:
                self._listen()
            except RedisError as exc:
                log.warning("done listener lost Redis (%s); reconnecting", type(exc).__name__)
                self._subscribed.clear()
                self._wake_all()
                time.sleep(0.5)

    def _listen(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(keys.DONE_CHANNEL)
            self._subscribed.set()
            while True:
                message = pubsub.get_message(timeout=1.0)
                if message and message["type"] == "message":
                    self._wake(message["data"])
        finally:
            pubsub.close()

    def _wake(self, rid: str) -> None:
        with self._lock:
            events = list(self._waiters.get(rid, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        """After a lost subscription a finish may have been missed: let every waiter re-read."""
        with self._lock:
            events = [e for group in self._waiters.values() for e in group]
        for event in events:
            event.set()
