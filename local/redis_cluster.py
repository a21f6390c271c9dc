"""A local Redis Cluster from the bundled redis-server, for tests and benches: primaries and
their replicas, each node a process in a folder of its own, slots split evenly among the
primaries. Built without `redis-cli --cluster` (the bundled binary ships no redis-cli):
CLUSTER ADDSLOTS on each primary, CLUSTER MEET to join them, CLUSTER REPLICATE for each
replica, then poll until the cluster says it is whole.

`cluster-require-full-coverage no`, as a production cluster for Answerback should have it:
with the default (yes) every node refuses every command (CLUSTERDOWN) from the moment one
primary is marked failed until its replica takes over, so one shard's failover would stop
the other shards too (docs/cluster.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from redis import Redis
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError

from local.redis_server import RedisServer, free_cluster_port

SLOTS = 16384


class ClusterNodeServer(RedisServer):
    """One cluster node: a redis-server with `cluster-enabled yes`; its cluster state
    (node id, epochs, peers) in nodes.conf in its folder, so a restarted node rejoins as
    itself (as a replica, once another took its slots over)."""

    def __init__(self, data_dir: Path, node_timeout_ms: int, password: str = "") -> None:
        super().__init__(data_dir, port=free_cluster_port())
        self.node_timeout_ms = node_timeout_ms
        self.password = password

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self) -> str:
        lines = [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-node-timeout {self.node_timeout_ms}",
            "cluster-require-full-coverage no",
            "repl-diskless-sync-delay 0",  # Redis 7 syncs a replica diskless, after 5 s by default
        ]
        if self.password:
            lines += [f"requirepass {self.password}", f"masterauth {self.password}"]
        return super().config() + "\n".join(lines) + "\n"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self) -> Redis:
        """A plain client of this one node (no cluster routing): for the cluster's own commands."""
        return Redis.from_url(self.url, decode_responses=True, socket_timeout=2, socket_connect_timeout=1)

    def ask(self, *command: str | int) -> object:
        with self.client() as client:
            return client.execute_command(*command)

    def info(self, section: str) -> dict[str, object]:
        with self.client() as client:
            return client.info(section)


class LocalCluster:
    """`primaries` primaries with `replicas` replicas each, on 127.0.0.1 (not `localhost`,
    which may resolve to ::1 while the nodes listen on IPv4 only). A short node timeout makes
    a killed primary's failover take seconds, not the default's tens of seconds. With
    `password`, every node requires it (and replicas use it towards their primary)."""

    def __init__(
        self,
        data_dir: Path,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        password: str = "",
    ) -> None:
        count = primaries * (1 + replicas)
        self.primary_count = primaries
        self.nodes = [ClusterNodeServer(Path(data_dir) / f"node{i}", node_timeout_ms, password) for i in range(count)]

    @property
    def seeds(self) -> str:
        """Every node as REDIS_CLUSTER_NODES takes them (any one would do)."""
        return ",".join(node.address for node in self.nodes)

    def start(self, timeout: float = 30.0) -> LocalCluster:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.start(timeout)
        primaries, replicas = self.nodes[: self.primary_count], self.nodes[self.primary_count :]
        for i, node in enumerate(primaries):
            first, last = i * SLOTS // len(primaries), (i + 1) * SLOTS // len(primaries)
            node.ask("CLUSTER ADDSLOTS", *range(first, last))
        for node in self.nodes[1:]:
            node.ask("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
        ids = {node.port: str(node.ask("CLUSTER MYID")) for node in self.nodes}
        _poll(
            lambda: all(int(_info(node)["cluster_known_nodes"]) == len(self.nodes) for node in self.nodes),
            deadline,
            "every node to know every other",
        )
        for i, replica in enumerate(replicas):
            primary_id = ids[primaries[i % len(primaries)].port]
            joined = partial(_replicate, replica, primary_id)
            _poll(joined, deadline, f"node {replica.port} to replicate {primary_id}")
        self.wait_healthy(max(0.0, deadline - time.monotonic()))
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running node says `cluster_state:ok`, flags no node as failed, and every
        replica's link to its primary is up: after a start, or after a failover and the old
        primary's restart (it rejoins as a replica)."""
        _poll(self.healthy, time.monotonic() + timeout, "the cluster to be whole")

    def healthy(self) -> bool:
        try:
            for node in self.nodes:
                if not node.alive:
                    continue
                if _info(node).get("cluster_state") != "ok":
                    return False
                if any("fail" in str(peer["flags"]) for peer in _known(node).values()):
                    return False
                replication = node.info("replication")
                if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                    return False
        except RedisError:
            return False
        return True

    def primary_of(self, key: str | bytes) -> ClusterNodeServer:
        """The node serving `key`'s slot now (as a running node sees it)."""
        return self.primary_of_slot(key_slot(key.encode() if isinstance(key, str) else key))

    def primary_of_slot(self, slot: int) -> ClusterNodeServer:
        """The running node that serves `slot` by its own account (the others may not have
        heard of a failover yet); the one with the newest epoch if two claim it for a moment."""
        claims = []
        for node in self.nodes:
            if node.alive:
                me = next(info for info in _known(node).values() if "myself" in str(info["flags"]))
                if "master" in str(me["flags"]) and any(_covers(r, slot) for r in me["slots"]):  # type: ignore[attr-defined]
                    claims.append((int(str(me["epoch"])), node))
        if not claims:
            raise LookupError(f"slot {slot} is served by no running node")
        return max(claims, key=lambda claim: claim[0])[1]

    def replicas_of(self, primary: ClusterNodeServer) -> list[ClusterNodeServer]:
        primary_id = str(primary.ask("CLUSTER MYID"))
        return [
            node
            for node in self.nodes
            if node.alive and node is not primary and _known(node)[node.port]["master_id"] == primary_id
        ]

    def kill(self, node: ClusterNodeServer) -> None:
        """SIGKILL one node: a crashed primary, for its replica to take over."""
        node.kill()

    def restart(self, node: ClusterNodeServer) -> None:
        """Start a killed node again; it rejoins with its nodes.conf (wait_healthy to see it back)."""
        node.start()

    def flush(self) -> None:
        """Empty every primary (the replicas follow)."""
        for node in self.nodes:
            if node.alive and node.info("replication").get("role") == "master":
                node.ask("FLUSHALL")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _known(node: ClusterNodeServer) -> dict[int, dict[str, object]]:
    """CLUSTER NODES as redis-py 8 answers it (a dict by "host:port@bus"), by port: a node
    names itself without a host until it has met another."""
    answer = node.ask("CLUSTER NODES")
    assert isinstance(answer, dict)
    return {int(address.split("@")[0].rpartition(":")[2]): info for address, info in answer.items()}


def _covers(slots: list[str], slot: int) -> bool:
    """Whether one entry of CLUSTER NODES's slots (["first", "last"] as redis-py 8 parses it) holds `slot`."""
    return int(slots[0]) <= slot <= int(slots[-1])


def _info(node: ClusterNodeServer) -> dict[str, str]:
    answer = node.ask("CLUSTER INFO")  # redis-py 8: a dict
    assert isinstance(answer, dict)
    return answer


def _replicate(node: ClusterNodeServer, primary_id: str) -> bool:
    """CLUSTER REPLICATE, which fails until the replica has heard of the primary by gossip."""
    try:
        node.ask("CLUSTER REPLICATE", primary_id)
    except ResponseError:
        return False
    return True


def _poll(condition: Callable[[], bool], deadline: float, what: str) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
