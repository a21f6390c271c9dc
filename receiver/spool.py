"""The local durable spool: callbacks Redis could not take within CALLBACK_HOLD.

Each web process appends to a file of its own in SPOOL_DIR (one JSON line per
delivery, written and fsynced before the 200), holding an exclusive `flock` on
it for as long as it lives. Replaying takes a file only with that lock: its own
files, or those of a process that is gone (a restart); a file being written by
a live process is never touched by another. A file is deleted once every entry
in it is in Redis. A replay cut short (Redis gone again, a crash) is taken up
later from the file's start: entries already stored come back as `duplicate`
and change nothing, so each delivery is applied exactly once.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from store.connection import OUTAGE
from store.records import new_id

log = logging.getLogger(__name__)

SUFFIX = ".spool"
REPLAY_INTERVAL_S = 1.0


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._writing: tuple[Path, int] | None = None   # the file this process appends to
        self._held: dict[Path, int] = {}                 # files whose lock this process holds
        self._pid = os.getpid()

    def append(self, entry: dict[str, Any]) -> None:
        """Durably keep one delivery; raises OSError when it cannot be kept."""
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self._forget_parent()
            path, fd = self._writing or self._create()
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                self._writing = None   # a torn line must not swallow the next entry: start afresh
                raise

    def entries(self) -> int:
        """Deliveries waiting in the spool, of every process sharing the directory."""
        total = 0
        for path in self._files():
            try:
                total += path.read_bytes().count(b"\n")
            except FileNotFoundError:
                pass
        return total

    def replay(self, apply: Callable[[dict[str, Any]], str]) -> int:
        """Apply every entry this process can own, file by file; answers how many were
        applied. An outage stops it (raised) and leaves the rest for the next round."""
        with self._lock:
            self._forget_parent()
            self._writing = None   # appends from now on go to a new file
            for path in self._files():
                if path not in self._held:
                    self._adopt(path)
            held = sorted(self._held)
        applied = 0
        for path in held:
            for entry in _read(path):
                apply(entry)
                applied += 1
            self._finish(path)
        return applied

    def _create(self) -> tuple[Path, int]:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{new_id()}{SUFFIX}"   # time-ordered names: replayed oldest first
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _sync_directory(self.directory)
        self._writing, self._held[path] = (path, fd), fd
        return path, fd

    def _adopt(self, path: Path) -> None:
        """Take a file whose writer is gone; skip it while another process holds it."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:   # not replayed and deleted meanwhile
                self._held[path] = fd
                return
        except (BlockingIOError, FileNotFoundError):
            pass
        os.close(fd)

    def _finish(self, path: Path) -> None:
        with self._lock:
            path.unlink(missing_ok=True)
            _sync_directory(self.directory)
            os.close(self._held.pop(path))

    def has_entries(self) -> bool:
        return bool(self._files())

    def _files(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.suffix == SUFFIX)
        except FileNotFoundError:
            return []

    def _forget_parent(self) -> None:
        """In a forked child the parent's locks are not ours to use."""
        if self._pid != os.getpid():
            self._pid, self._writing, self._held = os.getpid(), None, {}


def _read(path: Path) -> list[dict[str, Any]]:
    entries = []
    for line in path.read_bytes().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:   # a write cut short by a crash: never acknowledged
            log.warning("spool %s: skipping a torn entry", path.name)
    return entries


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolReplayer(threading.Thread):
    """Replays the spool into Redis whenever it holds entries and Redis takes them.
    Plain blocking calls only, so it runs as well under gevent as under threads."""

    def __init__(self, spool: Spool, apply: Callable[[dict[str, Any]], str]) -> None:
        super().__init__(name="spool-replayer", daemon=True)
        self.spool, self.apply = spool, apply

    def run(self) -> None:
        while True:
            time.sleep(REPLAY_INTERVAL_S)
            if not self.spool.has_entries():
                continue
            try:
                applied = self.spool.replay(self.apply)
            except OUTAGE as exc:
                log.info("spool replay waits for Redis (%s)", type(exc).__name__)
                continue
            except Exception:
                log.exception("spool replay failed")
                continue
            if applied:
                log.info("spool: %d deliveries replayed into Redis", applied)
