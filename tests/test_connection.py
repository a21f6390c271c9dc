"""store/connection.py: TLS to a Redis whose certificate no public CA signed (as managed
providers hand out), trusted through REDIS_TLS_CA_FILE or, by explicit opt-in,
REDIS_TLS_INSECURE; refused otherwise. A TLS terminator in front of the real Redis
plays the provider (tests/tls_terminator.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.exceptions import ConnectionError

from config import ConfigError, Settings
from store.connection import connect, redis_target
from tests.tls_terminator import tls_in_front_of


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory, redis_server) -> Iterator[tuple[str, str]]:
    with tls_in_front_of(redis_server.port, tmp_path_factory.mktemp("tls")) as url_and_ca:
        yield url_and_ca


def client_for(env: dict[str, str]):
    return connect(redis_target(Settings.from_env(env)))


def test_tls_with_the_providers_ca_file(self_signed):
    url, ca_file = self_signed
    with client_for({"REDIS_URL": url, "REDIS_TLS_CA_FILE": ca_file}) as client:
        assert client.ping()


def test_tls_without_verification_only_when_asked(self_signed):
    url, _ = self_signed
    with client_for({"REDIS_URL": url, "REDIS_TLS_INSECURE": "true"}) as client:
        assert client.ping()
    with client_for({"REDIS_URL": url}) as client, pytest.raises(ConnectionError, match="certificate"):
        client.ping()


@pytest.mark.parametrize(
    "env",
    [
        {"REDIS_SENTINELS": "10.0.0.1"},
        {"REDIS_SENTINELS": "10.0.0.1:x"},
        {"CALLBACK_HOLD": "45"},
        {"REDIS_MIN_REPLICAS": "-1"},
    ],
)
def test_unusable_high_availability_settings_are_refused_at_start(env):
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_sentinels_are_read_as_host_port_pairs():
    settings = Settings.from_env({"REDIS_SENTINELS": "s1:26379, s2:26380", "REDIS_URL": "redis://:pw@x/3"})
    target = redis_target(settings)
    assert target.sentinels == (("s1", 26379), ("s2", 26380)) and target.master == "mymaster"


def test_a_demoted_primary_is_left_so_the_next_attempt_connects_afresh(workdir):
    """A managed Redis fails over by moving its DNS name: a connection left open to the old
    primary, now a replica, is refused every write (READONLY; from a script, Redis 6.2 wraps it
    in the script's error). Each such answer is an outage and closes the connection, so the next
    attempt opens a new one (which resolves the name again). The old primary is made a replica
    here; then it is made a primary again, and the next write goes through."""
    import uuid

    from local.redis_server import RedisServer
    from store.connection import OUTAGE
    from store.deliveries import Deliveries

    primary = RedisServer(workdir / f"redis-primary-{uuid.uuid4().hex[:6]}").start()
    demoted = RedisServer(workdir / f"redis-demoted-{uuid.uuid4().hex[:6]}").start()
    client = connect(demoted.url, retries=0)
    try:
        deliveries = Deliveries(client, 60, 60)
        assert deliveries.store("", "before", {"api_id": "before"}, "POST") == "early"
        client.replicaof("127.0.0.1", primary.port)  # a replica refuses writes at once, synced or not
        for write in (
            lambda: deliveries.store("", "during", {"api_id": "during"}, "POST"),  # a script
            lambda: client.set("plain", "1"),
        ):  # a command
            first = client.client_id()
            with pytest.raises(OUTAGE):
                write()
            assert client.client_id() != first  # the refused connection was closed; this is a new one
        client.replicaof("NO", "ONE")
        assert deliveries.store("", "after", {"api_id": "after"}, "POST") == "early"
    finally:
        client.close()
        demoted.stop()
        primary.stop()
