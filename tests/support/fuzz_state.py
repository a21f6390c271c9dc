"""Fresh state for every fuzz example: the in-process apps under test, a Redis database of
their own that each example resets, and the model a property checks the app against.

A property whose examples share state cannot replay a failure (the same choices name
another request, or meet other keys), so Hypothesis can neither shrink it nor print a
`@reproduce_failure` that works. Here every example starts from the same state: the
database is flushed and the seed restored (`Db.reset`), and a model is rebuilt from
nothing (`CallbackEnv.reset`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis as redis_lib
from hypothesis import HealthCheck, Phase, settings

import receiver
from config import Settings
from store import connect, keys
from store.outbox import Outbox
from store.records import STATUSES, Requests
from store.sweep import Sweeper
from tests.support.api import QUARANTINE_KEYS
from tests.support.fuzz_strategies import KEY, OTHER_KEY, Pools, bearer

DB_FUZZ, DB_CALLBACKS = 9, 10
TOKEN = "fuzz-plivo-token"
PUBLIC_URL = "http://answerback.fuzz.example"
# A refusal is counted, and a refused callback quarantined (tests/test_quarantine.py), never stored.
IGNORED_KEYS = {k.encode() for k in (keys.METRICS, *QUARANTINE_KEYS)}
# Counted over time as the metrics are (tests/test_series.py), and, for a request it names, one
# of its events (tests/test_events.py): a refusal or a duplicate writes these, nothing else.
IGNORED_PREFIX, IGNORED_SUFFIX = keys.SERIES_PREFIX.encode(), keys.events("").removeprefix(keys.request("")).encode()


def ignored(name: bytes) -> bool:
    return name in IGNORED_KEYS or name.startswith(IGNORED_PREFIX) or name.endswith(IGNORED_SUFFIX)


# Every property states its own max_examples. No example database (a replay comes from the
# printed seed or @reproduce_failure blob), no explain phase (after a failure it traces every
# later run with sys.settrace and keeps each trace), and the first bug ends the run.
FUZZ = settings(
    deadline=None,
    database=None,
    print_blob=True,
    report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


def build_app(redis_url: str, token: str):
    return receiver.create_app(
        Settings.from_env(
            {
                "REDIS_URL": redis_url,
                "API_KEYS": f"{KEY},{OTHER_KEY}",
                "PLIVO_AUTH_ID": "MAFUZZ0000000000000A",
                "PLIVO_AUTH_TOKEN": token,
                "PUBLIC_URL": PUBLIC_URL,
                "QUEUE_NAME": "answerback-fuzz",
            }
        )
    )


def close_app(app) -> None:
    """Close the app's Redis clients (an unclosed socket is a ResourceWarning, an error here)."""
    services = app.extensions["answerback"]
    for client in (services.redis, services.queue.connection, getattr(services.listener, "_redis", None)):
        if client is not None:
            client.close()


def submit_via(client, key: str, **extra: Any) -> str:
    body = {"method": "POST", "path": "Call/", "params": {"to": "14155550101"}} | extra
    answer = client.post("/v1/requests", json=body, headers=bearer(key))
    assert answer.status_code == 202, answer.data
    return answer.json["request_id"]


READERS = {
    b"string": lambda p, n: p.get(n),
    b"hash": lambda p, n: p.hgetall(n),
    b"list": lambda p, n: p.lrange(n, 0, -1),
    b"set": lambda p, n: p.smembers(n),
    b"zset": lambda p, n: p.zrange(n, 0, -1, withscores=True),
}


class Db:
    """One Redis database of the fuzz tests' own (no worker uses it): raw bytes access for
    snapshots, and a seed state that `reset` brings back exactly."""

    def __init__(self, port: int, db: int) -> None:
        self.url = f"redis://127.0.0.1:{port}/{db}"
        self.raw = redis_lib.Redis.from_url(self.url)
        self.debug_digest = True
        self.seed: list[tuple[bytes, int, bytes]] = []
        self.raw.flushdb()

    def keep_as_seed(self) -> None:
        """Remember every key as it is now (DUMP, with its time to live)."""
        names = list(self.raw.scan_iter(count=1000))
        with self.raw.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.pttl(name)
                pipe.dump(name)
            values = pipe.execute()
        self.seed = [(name, max(ttl, 0), dump) for name, ttl, dump in zip(names, values[::2], values[1::2])]

    def reset(self) -> None:
        """Back to the seed: flushed, and every seed key restored, in one transaction."""
        with self.raw.pipeline(transaction=True) as pipe:
            pipe.flushdb()
            for name, ttl, dump in self.seed:
                pipe.restore(name, ttl, dump)
            pipe.execute()

    def size(self) -> int:
        """Answerback's keys but the figures and events: what a new key of the store shows in."""
        return sum(1 for k in self.raw.scan_iter(match="ab:*", count=1000) if not ignored(k))

    def snapshot(self, names: list[bytes] | None = None) -> dict[bytes, Any]:
        """Every Answerback key (but the figures and events), or just `names`, with a digest of its value.
        DEBUG DIGEST-VALUE hashes on the server, the same for the same content whatever the
        order (DUMP is no good: a set's serialization changes order when Redis rehashes it);
        where DEBUG is off, values are read by type."""
        if names is None:
            names = [k for k in self.raw.scan_iter(match="ab:*", count=1000) if not ignored(k)]
        if not names:
            return {}
        if self.debug_digest:
            try:
                return dict(zip(names, self.raw.execute_command("DEBUG", "DIGEST-VALUE", *names)))
            except redis_lib.ResponseError:
                self.debug_digest = False
        with self.raw.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.type(name)
            types = pipe.execute()
        with self.raw.pipeline(transaction=False) as pipe:
            for name, kind in zip(names, types):
                READERS.get(kind, lambda p, n: p.type(n))(pipe, name)
            values = pipe.execute()
        return {n: (t, sorted(v) if t == b"set" else v) for n, t, v in zip(names, types, values) if t != b"none"}

    def close(self) -> None:
        self.raw.flushdb()
        self.raw.close()


@dataclass(repr=False)
class FuzzEnv:
    """Two apps on one database (one requires signed callbacks, one takes them unsigned, so
    that parsing and matching are fuzzed too) and the seed's ids."""

    db: Db
    apps: dict[str, Any]
    pools: Pools

    def client(self, name: str):
        return self.apps[name].test_client()


def seed_requests(db: Db, apps: dict[str, Any]) -> Pools:
    """Four requests of KEY (two of them completed, each with a second delivery besides
    the one kept as its response, so that their :deliveries keys exist) and two of OTHER_KEY."""
    unsigned = apps["unsigned"].test_client()
    own = [submit_via(unsigned, KEY) for _ in range(4)]
    other = [submit_via(unsigned, OTHER_KEY) for _ in range(2)]
    api_ids = []
    for rid in own[:2]:
        api_id = str(uuid.uuid4())
        for status in ("fired", "answered"):
            answer = unsigned.post(f"/callbacks/plivo?rid={rid}", json={"api_id": api_id, "status": status})
            assert answer.json == {"outcome": "matched"}
        assert db.raw.exists(keys.deliveries(rid))
        api_ids.append(api_id)
    db.keep_as_seed()
    return Pools(tuple(own), tuple(other), tuple(api_ids))


@pytest.fixture(scope="module")
def fuzz_env(redis_server) -> Iterator[FuzzEnv]:
    """Built once per module; a test or an example calls `env.db.reset()` to start from the seed."""
    db = Db(redis_server.port, DB_FUZZ)
    apps = {"signed": build_app(db.url, TOKEN), "unsigned": build_app(db.url, "")}
    yield FuzzEnv(db, apps, seed_requests(db, apps))
    for app in apps.values():
        close_app(app)
    db.close()


@pytest.fixture
def seeded(fuzz_env) -> FuzzEnv:
    """The fuzz apps, their database back at the seed."""
    fuzz_env.db.reset()
    return fuzz_env


@dataclass(repr=False)
class CallbackEnv:
    """An app taking unsigned callbacks and one requiring signatures, on one database, and
    the model of what Redis must hold: rebuilt from nothing for every example (`reset`)."""

    db: Db
    app: Any
    signed_app: Any
    outbox: Outbox
    sweeper: Sweeper
    redis: Any
    status: dict[str, str] = field(default_factory=dict)  # rid -> status we expect it to have
    api_to_rid: dict[str, str] = field(default_factory=dict)  # api ids Redis maps to a request
    seen: set[tuple[str, str]] = field(default_factory=set)  # (target, digest input) stored once
    tenant: str = ""  # KEY's tenant id, as records hold it

    def reset(self) -> None:
        self.db.raw.flushdb()
        self.status, self.api_to_rid, self.seen = {}, {}, set()

    def watched(self, rid: str, api_id: str) -> list[bytes]:
        """The keys a delivery for `rid` / `api_id` could change (new keys show in `size`)."""
        names = [
            *map(keys.outbox, keys.API_CLASSES),
            keys.RETRY,
            keys.LEASES,
            keys.DEADLINES,
            keys.PURGE_NEXT,
            keys.DRAINERS,
        ]
        names += [keys.tenant_requests(self.tenant, status) for status in (None, *STATUSES)]
        names += [keys.api_id(api_id), keys.orphan(api_id)]
        if rid:
            names += [keys.request(rid), keys.deliveries(rid)]
        return [n.encode() for n in names]

    def fresh(self, state: str) -> tuple[str, str | None]:
        """A new request in `state` (queued, pending or expired), and its api_id once it has one.
        Make queued ones last: the claim here takes every queued request."""
        rid = submit_via(self.app.test_client(), KEY)
        self.status[rid] = "queued"
        self.tenant = self.tenant or Requests(self.redis, 60).get(rid).tenant
        if state == "queued":
            return rid, None
        api_id = str(uuid.uuid4())
        claim = self.outbox.claim("fuzz-drainer", {"api": 1000, "calls": 1000}, [], may_leave=False)
        item = next(c for c in claim.items if c.rid == rid)
        assert self.outbox.mark_sending(item) == 1
        self.outbox.register_api_id(rid, api_id, 3600 if state == "pending" else 0)
        if state == "expired":
            self.sweeper.sweep()
        record = self.app.test_client().get(f"/v1/requests/{rid}", headers=bearer(KEY)).json
        assert record["status"] == state and record["api_id"] == api_id
        self.status[rid], self.api_to_rid[api_id] = state, rid
        return rid, api_id


@pytest.fixture(scope="module")
def callback_env(redis_server) -> Iterator[CallbackEnv]:
    db = Db(redis_server.port, DB_CALLBACKS)
    app, signed, client = build_app(db.url, ""), build_app(db.url, TOKEN), connect(db.url)
    yield CallbackEnv(db, app, signed, Outbox(client, 604800, 4), Sweeper(client, 604800), client)
    close_app(app)
    close_app(signed)
    client.close()
    db.close()
