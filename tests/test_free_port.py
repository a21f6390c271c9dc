"""The one port allocator (local/redis_server.py, `free_port`): a port handed to one
process is handed to no other while that process lives, and never twice to the same one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from local.processes import ROOT
from local.redis_server import BUS_OFFSET, PORTS, free_cluster_port, free_port

pytestmark = pytest.mark.fast

# Small slices of the allocator's range, to exhaust quickly; one for each test, because this
# process keeps every port it was handed until it ends.
FEW, MORE = range(31000, 31016), range(31016, 31032)

HOLDER = """
import sys
from local.redis_server import BUS_OFFSET, PORTS, free_cluster_port, free_port
ports = []
try:
    while True:
        ports.append(free_port(range(int(sys.argv[1]), int(sys.argv[2]))))
except RuntimeError:
    pass
print(*ports, flush=True)
sys.stdin.read()   # hold them until told to end
"""


def take_all(ports: range) -> list[int]:
    taken = []
    while True:
        try:
            taken.append(free_port(ports))
        except RuntimeError:
            return taken


def test_a_port_another_process_holds_is_not_handed_out_and_none_twice():
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(FEW.start), str(FEW.stop)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        theirs = [int(port) for port in holder.stdout.readline().split()]
        ours = take_all(FEW)
        holder.stdin.close()  # the holder ends, and its reservations with it
    assert theirs, "the other process got no port at all"
    assert set(ours).isdisjoint(theirs)
    assert len(set(ours)) == len(ours) and len(set(theirs)) == len(theirs)
    assert len(ours) + len(theirs) <= len(FEW)


def test_the_ports_of_a_process_that_ended_are_handed_out_again():
    """Its reservations end with it: a second run of the suite does not find the range used up."""
    ended = subprocess.run(
        [sys.executable, "-c", HOLDER, str(MORE.start), str(MORE.stop)],
        cwd=ROOT,
        input="",
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = {int(port) for port in ended.stdout.split()}
    assert theirs and theirs <= set(take_all(MORE))


def test_a_cluster_nodes_bus_port_is_reserved_with_it():
    """A Redis Cluster node also listens on its port + 10000 (below 65536, or it refuses to
    start): no other process is handed that port while this one holds the node's."""
    bus = free_cluster_port() + BUS_OFFSET
    assert bus < PORTS.stop
    other = subprocess.run(
        [sys.executable, "-c", HOLDER, str(bus), str(bus + 1)],
        cwd=ROOT,
        input="",
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.split() == []
