"""The session's Redis Cluster: 3 primaries and 3 replicas from the bundled redis-server
(local/redis_cluster.py), started once per test process on first use. Registered as a pytest
plugin by tests/conftest.py.

`redis_cluster` is the cluster as a test finds it: whole (every node up, every replica linked:
a test that killed a primary restarts it, and the next test waits for it to rejoin) and empty.
A failover leaves the roles changed (the old primary is a replica now), so a test asks which
node serves a key (`primary_of`) rather than assuming."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.redis_cluster import LocalCluster


@pytest.fixture(scope="session")
def cluster_nodes(workdir) -> Iterator[LocalCluster]:
    cluster = LocalCluster(workdir / "cluster").start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster(cluster_nodes: LocalCluster) -> LocalCluster:
    for node in cluster_nodes.nodes:
        if not node.alive:
            cluster_nodes.restart(node)
    cluster_nodes.wait_healthy(30)
    cluster_nodes.flush()
    return cluster_nodes
