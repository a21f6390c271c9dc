"""A Redis that answers but refuses writes (out of memory, a failed RDB write, too few
replicas...) is an outage like a lost connection: a callback is held for CALLBACK_HOLD and
then spooled, a submission gets 503 with Retry-After, and once Redis takes writes again the
spool is replayed. An error that no retry mends (a bug, bad data) is a 500 with its cause
logged. Real redis-servers, web, worker and sandbox."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from redis import Redis
from redis.exceptions import ResponseError

from local.processes import wait_for
from local.redis_server import RedisServer, redis_binary
from store.connection import OUTAGE, WriteRefused, connect, refusal
from tests.support.api import submit, wait_status
from tests.support.services import Stack
from tests.support.signed_callbacks import delivery

pytestmark = pytest.mark.slow

HOLD_S = 2
SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]) return 1"


def oom(admin: Redis) -> Callable[[], None]:
    admin.config_set("maxmemory", "1")
    return lambda: admin.config_set("maxmemory", "0")


def noreplicas(admin: Redis) -> Callable[[], None]:
    admin.config_set("min-replicas-to-write", "1")
    return lambda: admin.config_set("min-replicas-to-write", "0")


def misconf(admin: Redis) -> Callable[[], None]:
    """A background save that fails (as on a full disk) stops writes while save points are set."""
    folder = admin.config_get("dir")["dir"]
    admin.config_set("save", "3600 1")
    admin.config_set("dir", "/proc")  # no file can be made there, even by root
    admin.bgsave()
    wait_for(lambda: admin.info("persistence")["rdb_last_bgsave_status"] == "err", 10, 0.05, "a failed save")
    admin.config_set("dir", folder)

    def undo() -> None:
        admin.bgsave()
        wait_for(lambda: admin.info("persistence")["rdb_last_bgsave_status"] == "ok", 10, 0.05, "a good save")
        admin.config_set("save", "")

    return undo


REFUSALS = {"OOM": oom, "NOREPLICAS": noreplicas, "MISCONF": misconf}


class MovableRedis(RedisServer):
    """A redis-server whose `dir` may be changed at run time (Redis 7 protects it by default)."""

    def config(self) -> str:
        version = subprocess.run([redis_binary(), "--version"], capture_output=True, text=True).stdout
        major = int(version.split("v=", 1)[1].split(".", 1)[0])
        return super().config() + ("enable-protected-configs yes\n" if major >= 7 else "")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[RedisServer]:
    started = MovableRedis(tmp_path_factory.mktemp("refusing")).start()
    yield started
    started.stop()


@pytest.fixture
def admin(server) -> Iterator[Redis]:
    with Redis(port=server.port, decode_responses=True) as client:
        client.flushall()
        yield client


@pytest.mark.parametrize("code", sorted(REFUSALS))
def test_a_refused_command_or_script_is_an_outage_and_passes_with_the_refusal(server, admin, code):
    client = connect(server.url, retries=0)
    undo = REFUSALS[code](admin)
    try:
        for write in (lambda: client.set("k", "v"), lambda: client.eval(SCRIPT, 1, "k", "v")):
            with pytest.raises(WriteRefused) as refused:
                write()
            assert refused.value.code == code and isinstance(refused.value, OUTAGE)
    finally:
        undo()
    assert client.set("k", "v") and client.eval(SCRIPT, 1, "k", "w") == 1
    client.close()


@pytest.mark.parametrize(
    "text, code",
    [
        ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", "MASTERDOWN"),
        ("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.", "BUSY"),
        (
            "Error running script (call to f_0a1b): @user_script:3: @user_script: 3: -NOREPLICAS Not enough "
            "good replicas to write.",
            "NOREPLICAS",
        ),
        (
            "ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica "
            "is configured to be writable (which is not the default) writes to replicas are just local and are not "
            "propagated.",
            "READONLY",
        ),
        ("BUSYKEY Target key name already exists.", None),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", None),
        ("Error running script (call to f_0a1b): @user_script:3: user_script:3: bad argument", None),
    ],
)
def test_refusals_are_told_from_errors_by_their_code_also_inside_a_scripts_error(text, code):
    """Refusals a test cannot easily make a real Redis give; the ones above are real."""
    assert refusal(ResponseError(text)) == code


@pytest.fixture
def refusing_stack(server, admin, base_env, workdir, sandbox) -> Iterator[Stack]:
    spool = workdir / f"spool-{uuid.uuid4().hex[:6]}"
    env = {
        **base_env,
        "REDIS_URL": server.url,
        "SWEEP_INTERVAL": "1",
        "LEASE_SECONDS": "3",
        "DRAINER_STALE_SECONDS": "2",
        "CALLBACK_HOLD": str(HOLD_S),
        "SPOOL_DIR": str(spool),
    }
    stack = Stack(env, workdir, 0)
    stack.start_web()
    stack.start_worker()
    sandbox.faults(drop_callback=1.0)  # the test delivers each callback itself
    yield stack
    sandbox.faults(drop_callback=0.0)
    stack.stop()


def spool_entries(web_url: str) -> float:
    text = httpx.get(web_url + "/metrics", timeout=10).text
    line = next(line for line in text.splitlines() if line.startswith("answerback_spool_entries "))
    return float(line.split()[1])


@pytest.mark.parametrize("code", sorted(REFUSALS))
def test_a_callback_to_a_redis_refusing_writes_is_held_then_spooled_and_replayed(refusing_stack, admin, code):
    stack = refusing_stack
    with stack.web.client() as api, stack.web.client(key=None) as sender:
        record = wait_status(api, submit(api, "POST", "Message/", {"src": "1", "dst": "2"})["request_id"], "pending")
        undo = REFUSALS[code](admin)
        try:
            started = time.monotonic()
            answer = delivery(sender, stack.web.url, record)
            held = time.monotonic() - started
            assert answer is not None and answer.status_code == 200, answer and answer.text
            assert answer.json() == {"outcome": "spooled"} and held >= HOLD_S - 0.2
            assert spool_entries(stack.web.url) == 1
            refused = api.post("/v1/requests", json={"method": "POST", "path": "Message/"})
            assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0, refused.text
        finally:
            undo()
        done = wait_status(api, record["request_id"], "completed", timeout=20)
        assert done["response"] == {"api_id": record["api_id"], "status": "delivered"}
        wait_for(lambda: spool_entries(stack.web.url) == 0, 10, 0.1, "the spool emptied")
        assert api.post("/v1/requests", json={"method": "POST", "path": "Message/"}).status_code == 202


def test_an_error_no_retry_mends_is_a_500_logged_with_its_cause(refusing_stack, admin):
    stack = refusing_stack
    with stack.web.client() as api:
        submit(api)
        listing = next(key for key in admin.scan_iter("ab:tenant:*:all"))
        admin.delete(listing)
        admin.set(listing, "not a sorted set")  # bad data: every read of the listing fails
        answer = api.get("/v1/requests")
    assert answer.status_code == 500 and answer.json() == {"error": "internal error"}
    log = stack.web.service.log_path.read_text()
    wait_for(lambda: "WRONGTYPE" in stack.web.service.log_path.read_text(), 5, 0.05, "the cause in web's log")
    assert "storage unavailable" not in log


def test_a_wait_on_a_demoted_primary_is_an_outage_and_leaves_it(tmp_path):
    """A script that writes nothing passes on a replica; the WAIT that vouches for it then is
    refused ("WAIT cannot be used with replica instances"): the primary was demoted, an
    outage, and the connection must go to wherever the primary is now."""
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(tmp_path / "replica", replica_of=primary.port).start()
    client = connect(replica.url, retries=0)
    try:
        first = client.client_id()
        with pytest.raises(WriteRefused) as refused:
            client.execute_command("WAIT", 1, 100)
        assert refused.value.code == "READONLY" and client.client_id() != first
    finally:
        client.close()
        replica.stop()
        primary.stop()
