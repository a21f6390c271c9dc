"""The stored record's format (store/record_format.py): its field list only grows, each
version's list is frozen here once released, records written before the version element
still read, and a record of a newer version is refused by name rather than misread."""

from __future__ import annotations

import uuid
from itertools import pairwise

import pytest
from redis.exceptions import ResponseError

from store import connect, keys
from store.deliveries import Deliveries
from store.record_format import RECORD_FIELDS, RECORD_VERSION
from store.records import Requests

DB = 13
TTL = 3600

# Every released version's fields, in stored order. A released list never changes; a new
# version appends fields to the one before (tested below) and is added here as it ships.
RELEASED = {
    0: (
        "tenant",
        "status",
        "method",
        "path",
        "callback_method",
        "submitted_at",
        "timeout",
        "api_class",
        "attempts",
        "sent_at",
        "api_id",
        "deadline",
        "completed_at",
        "late",
        "delivery_at",
        "delivery_method",
        "params",
        "response",
        "error",
        "notify_url",
        "notify_host",
        "notify_status",
        "notify_event",
        "notify_attempts",
        "notify_error",
        "notify_delivered_at",
        "drainer",
        "claim_id",
    ),
}
RELEASED[1] = RELEASED[0]  # version 1 added the version element only
RELEASED[2] = (*RELEASED[1], "retry_of", "retried_as", "idempotency_key")

# A queued request with a notify_url, as the code before the version element stored it
# (version 0: no tag; the fields of RELEASED[0], false where unset).
VERSION_0_RECORD = bytes.fromhex(
    "dc001ca27431a6717565756564a4504f5354b14163636f756e742f4d41312f43616c6c2fa4504f5354b131373030"
    "3030303030303030302e313233a23630a563616c6c73c2c2c2c2c2c2c2c2aa7b22746f223a2231227dc2c2b66874"
    "7470733a2f2f6e2e6578616d706c652f686f6f6bad6e2e6578616d706c653a343433a770656e64696e67c2c2c2c2"
    "c2c2"
)
VERSION_0_FIELDS = {
    "tenant": "t1",
    "status": "queued",
    "method": "POST",
    "path": "Account/MA1/Call/",
    "callback_method": "POST",
    "submitted_at": "1700000000000.123",
    "timeout": "60",
    "api_class": "calls",
    "params": '{"to":"1"}',
    "notify_url": "https://n.example/hook",
    "notify_host": "n.example:443",
    "notify_status": "pending",
}


@pytest.fixture
def redis(redis_server):
    """This module's database, empty (it shadows the session's client on database 0)."""
    client = connect(f"redis://127.0.0.1:{redis_server.port}/{DB}")
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def raw(redis_server):
    """The same database, answering bytes: records are msgpack, not text."""
    client = connect(f"redis://127.0.0.1:{redis_server.port}/{DB}", decode_responses=False)
    yield client
    client.close()


def test_each_version_only_appends_fields_and_the_code_stores_the_latest():
    versions = sorted(RELEASED)
    assert versions == list(range(len(versions)))
    for older, newer in pairwise(versions):
        assert RELEASED[newer][: len(RELEASED[older])] == RELEASED[older], f"version {newer} changed a field"
    assert versions[-1] == RECORD_VERSION, "a new record version is added to RELEASED when it ships"
    assert RELEASED[RECORD_VERSION] == RECORD_FIELDS, (
        "a released version's fields never change: append new fields under a new RECORD_VERSION"
    )


def test_a_record_is_stored_with_its_version_first(redis, raw):
    rid = str(uuid.uuid4())
    raw.set(keys.request(rid), VERSION_0_RECORD)
    Deliveries(redis, TTL, TTL).store(rid, "api-1", {"api_id": "api-1"}, "POST")
    stored = raw.get(keys.request(rid))
    assert stored[:3] == bytes([0xDC, 0, len(RECORD_FIELDS) + 1])  # an array of the version and every field
    assert stored[3] == RECORD_VERSION  # a positive fixint: one byte


def test_a_record_written_before_the_version_element_reads_and_changes_as_before(redis, raw):
    rid = str(uuid.uuid4())
    raw.set(keys.request(rid), VERSION_0_RECORD)
    requests = Requests(redis, TTL)
    assert requests.get(rid).fields == {"request_id": rid, **VERSION_0_FIELDS, "deliveries": "0"}

    assert Deliveries(redis, TTL, TTL).store(rid, "api-1", {"api_id": "api-1"}, "POST") == "matched"
    record = requests.get(rid).to_json()
    assert record["status"] == "completed" and record["api_id"] == "api-1"
    assert record["response"] == {"api_id": "api-1"} and record["notify"]["url"] == VERSION_0_FIELDS["notify_url"]
    assert {name: requests.get(rid).fields[name] for name in VERSION_0_FIELDS if name != "status"} == {
        name: value for name, value in VERSION_0_FIELDS.items() if name != "status"
    }


def test_a_record_of_a_newer_version_is_refused_naming_its_version_and_left_as_it_is(redis, raw):
    rid = str(uuid.uuid4())
    header, fields = VERSION_0_RECORD[:3], VERSION_0_RECORD[3:]
    newer = header[:2] + bytes([header[2] + 2, RECORD_VERSION + 1]) + fields + b"\xa1x"  # and one field more
    raw.set(keys.request(rid), newer)
    with pytest.raises(ResponseError) as refused:
        Requests(redis, TTL).get(rid)
    assert f"record {keys.request(rid)} has format version {RECORD_VERSION + 1}" in str(refused.value)
    assert f"reads versions 0 to {RECORD_VERSION}" in str(refused.value)
    with pytest.raises(ResponseError, match=f"format version {RECORD_VERSION + 1}"):
        Deliveries(redis, TTL, TTL).store(rid, "api-1", {"api_id": "api-1"}, "POST")
    assert raw.get(keys.request(rid)) == newer
