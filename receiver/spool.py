"""The local durable spool: callbacks Redis could not take within CALLBACK_HOLD.

Each web process appends to one file of its own in SPOOL_DIR (one JSON line per
delivery, written and fsynced before the 200), holding an exclusive `flock` on it
for as long as it lives. It keeps appending to that same file for as long as
replays fail, so an outage of any length costs one file and one descriptor per
web process. Replaying takes a file only with that lock: its own file, or those
of a process that is gone (a restart); a file being written by a live process is
never touched by another. A replay goes on from where the last one stopped (an
outage stops it, and the entry it stopped at is tried again), and a file is
deleted once every entry in it is in Redis: the writer's next spooled callback
starts a new one. A file taken over after a crash is replayed from its start:
entries already stored come back as `duplicate` and change nothing, so each
delivery is applied exactly once.

An entry that fails for another reason than an outage (bad data, a bug) must not
hold up the ones behind it: it goes to DEAD_LETTERS in SPOOL_DIR, with its error,
for a person to look at, and the replay goes on.

In the web's gevent workers a thread is a greenlet of one hub, and a system call
that blocks (an fsync above all) would stop every connection of the process: the
spool's writes, fsyncs and reads run in gevent's pool of real threads (`_blocking`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gevent
from gevent import monkey

from store.connection import OUTAGE
from store.records import new_id

log = logging.getLogger(__name__)

SUFFIX = ".spool"
DEAD_LETTERS = "dead-letters.jsonl"  # not a SUFFIX file: never replayed
REPLAY_INTERVAL_S = 1.0
READ_CHUNK = 1 << 20  # bytes of whole lines read at a time while replaying or counting

T = TypeVar("T")


@dataclass
class _Held:
    """A spool file whose lock this process holds."""

    fd: int
    size: int = 0  # bytes this process wrote to it (its own file)
    written: int = 0  # entries this process wrote to it
    replayed: int = 0  # bytes from its start applied to Redis (or dead-lettered)
    replayed_entries: int = 0


@dataclass
class _Counted:
    """Whole lines seen in a file this process does not write, up to `offset`: spool files
    only grow (and the dead letters, until a person empties them), so a count reads only
    what was appended since the last one."""

    offset: int = 0
    lines: int = 0


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()  # appends, adopting and deleting files
        self._count_lock = threading.Lock()  # _counted
        self._writing: Path | None = None  # the file this process appends to
        self._held: dict[Path, _Held] = {}
        self._counted: dict[Path, _Counted] = {}
        self._pid = os.getpid()

    def append(self, entry: dict[str, Any]) -> None:
        """Durably keep one delivery; raises OSError when it cannot be kept."""
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self._forget_parent()
            path = self._writing or self._create()
            held = self._held[path]
            try:
                _blocking(_write_durably, held.fd, line)
            except OSError:
                # A torn line must not swallow the next entry: later ones go to a new file, and
                # this one is replayed (torn tail skipped) and deleted like any other.
                self._writing = None
                raise
            held.size += len(line)
            held.written += 1

    def entries(self) -> int:
        """Deliveries waiting in the spool, of every process sharing the directory: this
        process's own file from memory, the others from what was appended since the last count."""
        with self._count_lock:
            self._forget_parent()
            total = 0
            files = self._files()
            for path in files:
                held = self._held.get(path)
                if path == self._writing and held is not None:
                    total += held.written - held.replayed_entries
                    continue
                total += self._count_lines(path) - (held.replayed_entries if held else 0)
            for gone in set(self._counted) - set(files):
                del self._counted[gone]
            return total

    def dead_letters(self) -> int:
        """Entries in DEAD_LETTERS: replays that failed for another reason than an outage."""
        with self._count_lock:
            return self._count_lines(self.directory / DEAD_LETTERS)

    def replay(self, apply: Callable[[dict[str, Any]], str]) -> int:
        """Apply every entry this process can own, file by file; answers how many were
        applied. An outage stops it (raised) and leaves the rest for the next round."""
        with self._lock:
            self._forget_parent()
            for path in self._files():
                if path not in self._held:
                    self._adopt(path)
            held = sorted(self._held)
        return sum(self._replay_file(path, apply) for path in held)

    def has_entries(self) -> bool:
        return bool(self._files())

    def _replay_file(self, path: Path, apply: Callable[[dict[str, Any]], str]) -> int:
        held = self._held[path]
        applied = 0
        while True:
            lines = _blocking(_whole_lines, held.fd, held.replayed)
            for line in lines:
                applied += self._replay_line(path, line, apply)  # an outage stops here: tried again
                held.replayed += len(line)
                held.replayed_entries += 1
            if lines:
                continue
            with self._lock:
                if path == self._writing and held.size > held.replayed:
                    continue  # appended while this replay ran
                torn = _blocking(os.fstat, held.fd).st_size - held.replayed if path != self._writing else 0
                if torn:  # a write cut short (a crash, a failed write): never acknowledged
                    log.warning("spool %s: skipping a torn entry of %d bytes", path.name, torn)
                self._finish(path)
            return applied

    def _replay_line(self, path: Path, line: bytes, apply: Callable[[dict[str, Any]], str]) -> int:
        """1 if the entry was applied, 0 if it went to the dead letters; raises an outage."""
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise TypeError("a spool entry is a JSON object")
            apply(entry)
            return 1
        except OUTAGE:
            raise
        except Exception as exc:  # this entry alone: keep it aside and go on with the rest
            log.error(
                "spool %s: an entry could not be replayed (%s: %s); kept in %s",
                path.name,
                type(exc).__name__,
                exc,
                DEAD_LETTERS,
            )
            record = {
                "spool_file": path.name,
                "error": f"{type(exc).__name__}: {exc}",
                "entry": line.decode("utf-8", "replace").rstrip("\n"),
            }
            self._dead_letter((json.dumps(record, separators=(",", ":")) + "\n").encode())
            return 0

    def _dead_letter(self, line: bytes) -> None:
        """Keep a line in DEAD_LETTERS (O_APPEND, one write: processes may share it)."""
        fd = os.open(self.directory / DEAD_LETTERS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            _blocking(_write_durably, fd, line)
        finally:
            os.close(fd)
        _blocking(_sync_directory, self.directory)

    def _create(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{new_id()}{SUFFIX}"  # time-ordered names: replayed oldest first
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._held[path] = _Held(fd)
        _blocking(_sync_directory, self.directory)
        self._writing = path
        return path

    def _adopt(self, path: Path) -> None:
        """Take a file whose writer is gone; skip it while another process holds it."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:  # not replayed and deleted meanwhile
                self._held[path] = _Held(fd)
                return
        except (BlockingIOError, FileNotFoundError):
            pass
        os.close(fd)

    def _finish(self, path: Path) -> None:
        """Every entry of `path` is in Redis (or the dead letters): delete it. Under _lock."""
        path.unlink(missing_ok=True)
        _blocking(_sync_directory, self.directory)
        os.close(self._held.pop(path).fd)
        if path == self._writing:
            self._writing = None

    def _count_lines(self, path: Path) -> int:
        """Whole lines in `path` (0 if it is gone), reading only what was appended since the
        last count. Under _count_lock."""
        counted = self._counted.setdefault(path, _Counted())
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            if _blocking(os.fstat, fd).st_size < counted.offset:  # emptied by hand (the dead letters)
                counted = self._counted[path] = _Counted()
            while lines := _blocking(_whole_lines, fd, counted.offset):
                counted.offset += sum(map(len, lines))
                counted.lines += len(lines)
        finally:
            os.close(fd)
        return counted.lines

    def _files(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.suffix == SUFFIX)
        except FileNotFoundError:
            return []

    def _forget_parent(self) -> None:
        """In a forked child the parent's locks are not ours to use."""
        if self._pid != os.getpid():
            self._pid, self._writing, self._held, self._counted = os.getpid(), None, {}, {}


def _blocking(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)`, a system call that may block, in a real thread where threads are
    greenlets (gevent's monkey-patching): there it would stop the hub, and with it every
    other connection of the process, for as long as the disk takes."""
    if monkey.is_module_patched("threading"):
        return gevent.get_hub().threadpool.apply(call, args)
    return call(*args)


def _write_durably(fd: int, line: bytes) -> None:
    view = memoryview(line)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def _whole_lines(fd: int, offset: int) -> list[bytes]:
    """The whole lines (each ending with a newline) after `offset`: about READ_CHUNK bytes
    of them, at least one if there is one; none if only a line not yet ended is left."""
    size = READ_CHUNK
    while True:
        data = os.pread(fd, size, offset)
        end = data.rfind(b"\n") + 1
        if end or len(data) < size:
            return data[:end].splitlines(keepends=True)
        size *= 2  # one line longer than the chunk


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolReplayer(threading.Thread):
    """Replays the spool into Redis every `interval` seconds while it holds entries, until
    Redis takes them. Plain blocking calls only, so it runs as well under gevent as under threads."""

    def __init__(
        self, spool: Spool, apply: Callable[[dict[str, Any]], str], interval: float = REPLAY_INTERVAL_S
    ) -> None:
        super().__init__(name="spool-replayer", daemon=True)
        self.spool, self.apply, self.interval = spool, apply, interval

    def run(self) -> None:
        waiting = False  # for Redis: said once per outage, then at debug level
        while True:
            time.sleep(self.interval)
            if not self.spool.has_entries():
                continue
            try:
                applied = self.spool.replay(self.apply)
            except OUTAGE as exc:
                log.log(
                    logging.DEBUG if waiting else logging.INFO, "spool replay waits for Redis (%s)", type(exc).__name__
                )
                waiting = True
                continue
            except Exception:
                log.exception("spool replay failed")
                continue
            waiting = False
            if applied:
                log.info("spool: %d deliveries replayed into Redis", applied)
