"""The store's partitions (store/partitions.py): where each request's keys live, and the count
a store was made with."""

import uuid
from collections import Counter

import pytest
from redis.crc import key_slot

from local.redis_server import RedisServer
from store import connect, keys
from store.partitions import COUNT_KEY, PartitionCountMismatch, Partitions
from store.records import Requests, Submission


def test_one_partition_is_the_single_redis_layout():
    one = Partitions(1)
    assert one.prefixes() == (keys.PREFIX,)
    rid = one.new_id()
    assert one.of(rid) == 0 and one.at(rid) == keys.PREFIX and one.home("anything") == 0


@pytest.mark.parametrize("count", [2, 3, 24, 48])
def test_partitions_spread_evenly_over_slots_and_ids_land_where_asked(count):
    parts = Partitions(count)
    slots = [key_slot(prefix.encode()) for prefix in parts.prefixes()]
    assert slots == sorted(slots) and len(set(slots)) == count
    for p, slot in enumerate(slots):
        assert p * 16384 // count <= slot < (p + 1) * 16384 // count
        # every key built under a prefix hashes to the prefix's slot
        assert key_slot(keys.at(parts.prefix(p), keys.request("x")).encode()) == slot
        rid = parts.new_id(p)
        assert parts.of(rid) == p and len(rid) == 36 and rid[14] == "7"
    # three primaries holding a third of the slots each hold a third of 24 partitions
    if count == 24:
        assert Counter(slot * 3 // 16384 for slot in slots) == {0: 8, 1: 8, 2: 8}


def test_random_ids_and_names_spread_over_partitions():
    parts = Partitions(4)
    assert set(Counter(parts.of(parts.new_id()) for _ in range(400))) == {0, 1, 2, 3}
    assert set(Counter(parts.home(str(n)) for n in range(400))) == {0, 1, 2, 3}


@pytest.fixture(scope="module")
def empty_redis(workdir):
    """A Redis of this module's own, empty: whether a store holds requests is what is checked."""
    server = RedisServer(workdir / f"redis-partitions-{uuid.uuid4().hex[:6]}").start()
    client = connect(server.url)
    yield client
    client.close()
    server.stop()


def test_a_store_made_with_one_count_refuses_another(empty_redis):
    redis = empty_redis
    redis.flushdb()
    try:
        Partitions(1).check(redis)
        assert redis.get(COUNT_KEY) is None, "one partition records nothing: the layout of every old store"
        Partitions(4).check(redis)
        Partitions(4).check(redis)
        assert redis.get(COUNT_KEY) == "4"
        for other in (1, 8):
            with pytest.raises(PartitionCountMismatch, match="STORE_PARTITIONS=4"):
                Partitions(other).check(redis)
    finally:
        redis.delete(COUNT_KEY)


def test_a_single_partition_store_with_requests_refuses_partitions(empty_redis):
    """A store that records no count was made with one partition: once it holds requests, a
    process with STORE_PARTITIONS above 1 must refuse it, not record its own count (it would find
    none of them, and every process of the deployment would then refuse the store)."""
    redis = empty_redis
    redis.flushdb()
    requests = Requests(redis, 3600)
    requests.submit(Submission("t1", "POST", "Call/", {}, "POST", 60))
    with pytest.raises(PartitionCountMismatch, match="set STORE_PARTITIONS=1"):
        Partitions(4).check(redis)
    assert redis.get(COUNT_KEY) is None
    Partitions(1).check(redis)
