"""The store on a Redis Cluster (REDIS_CLUSTER_NODES, store/connection.py connect_store): the
store's client is a cluster client while RQ's stays on REDIS_URL; each partition's scripts run
on the primary of its slot; the cluster's password is REDIS_URL's; and a primary killed costs
only an outage of its own slots (OUTAGE errors, so callers retry or spool), until its replica
takes over, after which the same client writes there again. A real cluster of 3 primaries
and 3 replicas (tests/support/cluster.py)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter

import pytest
from redis import BlockingConnectionPool
from redis.exceptions import ClusterDownError

from config import Settings
from local.processes import wait_for
from local.redis_cluster import ClusterNodeServer, LocalCluster
from local.redis_server import RedisServer, free_cluster_port
from store import keys
from store.connection import OUTAGE, connect, connect_store, now_ms, on_cluster, redis_target, within
from store.deliveries import Deliveries
from store.health import Health
from store.migrate import main as migrate_main
from store.outbox import Outbox
from store.partitions import Partitions
from store.records import Requests, Submission
from store.redis_internals import ClusterConnection, ClusterUnreachable, Parser
from store.scripts import Scripts
from store.sweep import Sweeper
from store.tenants import salt
from store.waiting import DoneListener
from tests.support.services import Stack
from tests.support.signed_callbacks import delivery

PARTITIONS = Partitions(24)


def store_client(cluster: LocalCluster, redis_url: str = "redis://127.0.0.1:6379/0", **options: object):
    """The store's client as web and workers build it, from one seed node."""
    settings = Settings.from_env({"REDIS_URL": redis_url, "REDIS_CLUSTER_NODES": cluster.nodes[0].address})
    return connect_store(redis_target(settings), **options)  # type: ignore[arg-type]


def rejected(cluster: LocalCluster, prefix: str) -> int:
    """The count the `refused` script keeps in `prefix`'s partition, read on the node that
    serves its slot, with a plain client: present there only if the script ran there."""
    with cluster.primary_of(prefix).client() as node:
        return int(node.hget(keys.at(prefix, keys.METRICS), "rejected_cluster_test") or 0)


def refuse(scripts: Scripts, prefix: str, how: str = "__call__") -> object:
    """Run the smallest script (it counts one refused callback) in `prefix`'s partition."""
    if how == "replicated":
        return scripts.replicated(1, "refused", "cluster_test", "", now_ms(), at=prefix)
    run = scripts if how == "__call__" else getattr(scripts, how)
    return run("refused", "cluster_test", "", now_ms(), at=prefix)


def test_the_store_is_on_the_cluster_and_the_queue_on_redis_url(redis_cluster, redis_server):
    from workers.context import WorkerContext

    settings = Settings.from_env({"REDIS_URL": redis_server.url, "REDIS_CLUSTER_NODES": redis_cluster.seeds})
    context = WorkerContext(settings)
    assert on_cluster(context.redis) and not on_cluster(context.rq_redis)
    assert context.rq_redis.connection_pool.connection_kwargs["port"] == redis_server.port
    spread = {redis_cluster.primary_of(prefix).port for prefix in PARTITIONS.prefixes()}
    primaries = [node for node in redis_cluster.nodes if node.info("replication")["role"] == "master"]
    assert len(primaries) == 3 and spread == {node.port for node in primaries}
    assert all(len(redis_cluster.replicas_of(node)) == 1 for node in primaries)


def test_the_clusters_connections_are_connects(redis_cluster):
    """The parser, health check, refusals and bounded pools of connect() (redis-py's cluster
    client drops the first two from what it hands its nodes: store/redis_internals.py)."""
    client = store_client(redis_cluster, max_connections=3, queue_timeout=1)
    client.set(keys.at(PARTITIONS.prefix(7), "x"), "1")
    pool = client.get_node_from_key(PARTITIONS.prefix(7)).redis_connection.connection_pool
    connection = pool.get_connection()
    try:
        assert isinstance(connection, ClusterConnection) and isinstance(connection._parser, Parser)
        assert connection.health_check_interval == 30 and connection.socket_timeout == 5
        assert isinstance(pool, BlockingConnectionPool) and pool.max_connections == 3
    finally:
        pool.release(connection)


def test_each_partitions_scripts_run_on_the_primary_of_its_slot(redis_cluster):
    """Through redis-py's Script (`__call__`), the store's own EVALSHA (`once`, `retried`) and
    the script + counter + WAIT of `replicated` on one connection of that node (WAIT 1: each
    primary has one replica); then again after every node forgot every script."""
    scripts = Scripts(store_client(redis_cluster))
    ways = ("__call__", "once", "retried", "replicated")
    for prefix in PARTITIONS.prefixes():
        for how in ways:
            assert refuse(scripts, prefix, how) == 1
    for node in redis_cluster.nodes:
        node.ask("SCRIPT FLUSH")
    for prefix in PARTITIONS.prefixes():
        for how in ways:
            refuse(scripts, prefix, how)
    assert {prefix: rejected(redis_cluster, prefix) for prefix in PARTITIONS.prefixes()} == dict.fromkeys(
        PARTITIONS.prefixes(), 2 * len(ways)
    )


def test_the_tenant_salts_wait_asks_the_node_that_wrote_it(redis_cluster):
    """With REDIS_MIN_REPLICAS the salt is used only once replicas hold it: WAIT counts the
    replicas of its own connection's writes, so it must go to the salt's node on the connection
    that wrote it (a cluster client would send it elsewhere, where it confirms nothing)."""
    for node in redis_cluster.nodes:
        node.ask("CONFIG RESETSTAT")
    assert len(salt(store_client(redis_cluster), 1)) == 64
    written = redis_cluster.primary_of(keys.TENANT_SALT)
    waits = {
        node.port: node.info("commandstats").get("cmdstat_wait", {}).get("calls", 0) for node in redis_cluster.nodes
    }
    assert waits == {node.port: int(node is written) for node in redis_cluster.nodes}


def test_heartbeats_and_the_health_report_read_the_clusters_clock(redis_cluster):
    """store/health.py pipelines TIME and CONFIG GET with its keys: redis-py refuses both in a
    cluster pipeline, which would end every process's heartbeat thread at its first beat."""
    health = Health(store_client(redis_cluster))
    now, _, durability = health.clock()
    health.beat("worker:test:1:cluster", {"kind": "worker"}, now)
    report = health.report()
    assert abs(report.now_ms - now_ms()) < 5000 and durability.appendonly == "yes"


def test_a_cluster_that_cannot_be_reached_is_an_outage():
    """redis-py raises RedisClusterException (not even a RedisError) when no node answers, and
    ClusterDownError (a ResponseError) while a cluster is down: both must read as an outage, or
    the webhook would answer 500 rather than hold on and spool."""
    dead = f"127.0.0.1:{free_cluster_port()}"
    settings = Settings.from_env({"REDIS_CLUSTER_NODES": dead})
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable) as raised:
        within(0.5, lambda: connect_store(redis_target(settings)), pause_s=0.1)
    assert isinstance(raised.value, OUTAGE) and time.monotonic() - started < 3
    assert isinstance(ClusterDownError("CLUSTERDOWN The cluster is down"), OUTAGE)


def test_the_clusters_password_is_redis_urls(workdir):
    """And a cluster whose every node is gone is an outage too, for a client built before."""
    cluster = LocalCluster(
        workdir / "cluster-password", primaries=1, replicas=0, node_timeout_ms=500, password="cluster-secret"
    )
    with cluster:
        client = store_client(cluster, "redis://:cluster-secret@127.0.0.1:6379/0")
        assert client.set(keys.at(PARTITIONS.prefix(5), "x"), "1") and client.ping()
        with pytest.raises(ClusterUnreachable) as refused:
            store_client(cluster, "redis://:wrong-secret@127.0.0.1:6379/0")
        assert isinstance(refused.value, OUTAGE) and "secret" not in str(refused.value)
    with pytest.raises(ClusterUnreachable):  # and once built, a client that reaches no node
        client.set(keys.at(PARTITIONS.prefix(5), "x"), "2")
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.at(PARTITIONS.prefix(5), "x"))
    with pytest.raises(ClusterUnreachable):
        pipe.execute()


@pytest.mark.slow
def test_callbacks_are_spooled_while_no_node_of_the_cluster_answers(redis_cluster, base_env, workdir, sandbox):
    """The webhook on a cluster, every node of which is then killed: a signed callback is held
    for CALLBACK_HOLD, then spooled and acknowledged, as with a single Redis (redis-py raises
    "cannot be connected" as a RedisClusterException, which is no RedisError: it would be a 500)."""
    spool = workdir / f"spool-cluster-{uuid.uuid4().hex[:6]}"
    env = {
        **base_env,
        "REDIS_CLUSTER_NODES": redis_cluster.seeds,
        "STORE_PARTITIONS": str(PARTITIONS.count),
        "SPOOL_DIR": str(spool),
        "CALLBACK_HOLD": "1",
    }
    stack = Stack(env, workdir, 0)
    try:
        stack.start_web()
        for node in redis_cluster.nodes:
            redis_cluster.kill(node)
        with stack.web.client(key=None) as client:
            record = {"request_id": str(uuid.uuid4()), "api_id": str(uuid.uuid4())}
            answer = delivery(client, stack.web.url, record)
        assert answer is not None and answer.status_code == 200, answer and answer.text
        assert answer.json() == {"outcome": "spooled"} and any(spool.iterdir())
    finally:
        stack.stop()  # the next test's fixture starts the nodes again


def test_a_drained_single_redis_store_migrates_into_the_cluster(redis_cluster, workdir, monkeypatch, capsys):
    """The upgrade path (store/migrate.py) with a real cluster as its target, built as
    `manage.py migrate` builds it: every finished request lands in its partition, on the primary
    of that partition's slot, and reads back as it was."""
    source = RedisServer(workdir / f"redis-migrate-to-cluster-{uuid.uuid4().hex[:6]}").start()
    try:
        plain = connect(source.url)
        requests, outbox, deliveries = Requests(plain, 3600), Outbox(plain, 3600, 4), Deliveries(plain, 3600, 3600)
        rids = []
        for i in range(8):
            submitted = requests.submit(Submission("t1", "POST", "Call/", {"to": str(i)}, "POST", 60))
            rids.append(rid := submitted.record.fields["request_id"])
            claimed = outbox.claim("drainer-1", {"api": 10, "calls": 10}, [], may_leave=False)
            assert outbox.mark_sending(next(c for c in claimed.items if c.rid == rid)) == 1
            outbox.register_api_id(rid, f"api-{i}", 60)
            assert deliveries.store(rid, f"api-{i}", {"api_id": f"api-{i}"}, "POST") == "matched"
        monkeypatch.setenv("REDIS_URL", source.url)  # RQ's; the store's is the cluster
        monkeypatch.setenv("REDIS_CLUSTER_NODES", redis_cluster.nodes[0].address)
        monkeypatch.setenv("STORE_PARTITIONS", str(PARTITIONS.count))

        assert migrate_main(["--from", source.url]) == 0
        assert f"copied {len(rids)} requests (0 were there already" in capsys.readouterr().out

        read = Scripts(store_client(redis_cluster))
        for rid in rids:
            assert read("read", rid, at=PARTITIONS.at(rid)) == Scripts(plain)("read", rid)
            with redis_cluster.primary_of(PARTITIONS.at(rid)).client() as node:
                assert node.exists(keys.at(PARTITIONS.at(rid), keys.request(rid)))
        assert len({redis_cluster.primary_of(PARTITIONS.at(rid)).port for rid in rids}) > 1
    finally:
        source.stop()


@pytest.mark.slow
def test_a_killed_primarys_slots_are_written_again_once_its_replica_takes_over(redis_cluster):
    """The client the webhook uses (no hidden retries, short timeouts) writes on through a
    failover: the killed primary's partitions fail with OUTAGE errors only, and only until its
    replica is promoted (cluster-node-timeout 1000 ms: a few seconds); the other primaries'
    partitions never fail. A client whose map predates the failover, used only once the old
    primary is back as a replica, is redirected (MOVED): by redis-py itself through the cluster
    client; through one node's connection (`replicated`) with one outage, which reads the map
    again, then on the new primary. The primary killed is the one web's done listener (?wait)
    subscribed on: it subscribes again on the new one. No node knows the scripts at first (as
    after restarts): loading one must not wait for the dead primary."""
    for node in redis_cluster.nodes:
        node.ask("SCRIPT FLUSH")
    scripts = Scripts(store_client(redis_cluster, socket_timeout=2, retries=0))
    stale, stale_replicated = Scripts(store_client(redis_cluster)), Scripts(store_client(redis_cluster))
    listener = DoneListener(store_client(redis_cluster))
    with listener.watching("before") as woken:  # started, and subscribed
        victim = subscribed_on(redis_cluster)
        prefix = next(p for p in PARTITIONS.prefixes() if redis_cluster.primary_of(p) is victim)
        others = [p for p in PARTITIONS.prefixes() if redis_cluster.primary_of(p) is not victim]
        redis_cluster.kill(victim)
        write_through_the_failover(scripts, prefix, others)
        wait_for(woken.is_set, 10, message="the done listener to subscribe again")  # it wakes every waiter then
    publisher = store_client(redis_cluster)
    with listener.watching("after") as woken:  # and hears what a script publishes
        wait_for(lambda: publisher.publish(keys.DONE_CHANNEL, "after") >= 0 and woken.wait(0.2), 5)
    assert redis_cluster.primary_of(prefix) is not victim and subscribed_on(redis_cluster) is not victim

    redis_cluster.restart(victim)  # back as the new primary's replica: it answers MOVED for `prefix`
    redis_cluster.wait_healthy(15)
    assert refuse(stale, prefix) == 1
    outages: list[BaseException] = []

    def replicated() -> object:
        try:
            return refuse(stale_replicated, prefix, "replicated")
        except OUTAGE as error:
            outages.append(error)
            raise

    assert within(5, replicated) == 1 and len(outages) == 1


def test_while_one_shard_is_down_submissions_ring_and_claims_take_from_the_others(redis_cluster):
    """A submission with no drain job alive rings one in its partition, then registers it in the
    others (store/records.py register_ring) only so that they ring no other: with one shard down
    that must not fail the submission, stored already (a 503 then: the client's retry is a second
    request, a second POST). A drain job's round of claims passes over the dead shard's
    partitions and sends what the others give (not leave it leased until the sweep), and so does
    the sweep, whose timers (here: a lease run out) go on in the other partitions, and a drain
    job handing over leaves the partitions it can."""
    client = store_client(redis_cluster)
    requests = Requests(client, 3600, drainer_stale_ms=1, partitions=PARTITIONS)  # a drain job is dead at once
    outbox = Outbox(client, 3600, max_drainers=4, partitions=PARTITIONS)
    victim = redis_cluster.primary_of(PARTITIONS.prefix(0))
    live = next(p for p in range(PARTITIONS.count) if redis_cluster.primary_of(PARTITIONS.prefix(p)) is not victim)
    key_a, key_b = [
        k for k in (f"key-{i}" for i in range(1000)) if PARTITIONS.home(hashlib.sha256(k.encode()).hexdigest()) == live
    ][:2]
    leased = requests.submit(Submission("t1", "POST", "Call/", {}, "POST", 60, idempotency_key=key_a))
    short = Outbox(client, 3600, max_drainers=4, lease_ms=1, partitions=PARTITIONS)
    assert len(short.claim("drainer-1", {keys.API: 0, keys.CALLS: 5}, [], may_leave=False).items) == 1
    redis_cluster.kill(victim)
    submitted = requests.submit(Submission("t1", "POST", "Call/", {}, "POST", 60, idempotency_key=key_b))
    rid = submitted.record.fields["request_id"]
    assert submitted.created and submitted.ring_id and PARTITIONS.of(rid) == live
    claim = outbox.claim(submitted.ring_id, {keys.API: 0, keys.CALLS: 5}, [], may_leave=False)  # partition 0 first
    assert [item.rid for item in claim.items] == [rid]
    swept = Sweeper(client, 3600, partitions=PARTITIONS).sweep()  # partition 0 first
    assert swept.recovered == 1  # the lease run out
    assert requests.get(leased.record.fields["request_id"]).status == "queued"  # type: ignore[union-attr]
    outbox.hand_over(submitted.ring_id)  # a stopping drain job leaves the live partitions
    assert not client.zscore(keys.at(PARTITIONS.prefix(live), keys.DRAINERS), submitted.ring_id)


def write_through_the_failover(scripts: Scripts, prefix: str, others: list[str]) -> None:
    killed = time.monotonic()
    errors: Counter[str] = Counter()
    while time.monotonic() - killed < 20:
        for other in others[:4]:
            refuse(scripts, other, "once")  # the other shards answer throughout
        try:
            refuse(scripts, prefix, "once")
            break
        except OUTAGE as error:
            errors[type(error).__name__] += 1
            time.sleep(0.05)
    took = time.monotonic() - killed
    assert errors and took < 10, f"no write to the killed primary's slot for {took:.1f} s: {errors}"
    print(f"failover: {took:.2f} s of {dict(errors)}")


def subscribed_on(cluster: LocalCluster) -> ClusterNodeServer:
    """The node a done listener's subscription is on (by channel or by pattern)."""

    def listened_on(node: ClusterNodeServer) -> bool:
        with node.client() as client:
            return bool(client.pubsub_numpat() or client.pubsub_numsub(keys.DONE_CHANNEL)[0][1])

    return next(node for node in cluster.nodes if node.alive and listened_on(node))
