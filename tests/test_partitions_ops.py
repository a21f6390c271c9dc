"""The operator's features with the store split into partitions (STORE_PARTITIONS=4): the
notifier claims from every partition, a retry lands in its original's partition, a bulk
retry gathers matches from every partition and counts each once, the quarantine keeps one
structure whatever partition a refused callback's request is in, and an alias's requests
move from every partition. On the ordinary test Redis (database 4), every partition on one
node: the code path of a cluster but for routing."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from config import Settings
from local.processes import wait_for
from notify_hosts import HostPolicy
from receiver.quarantine import recheck
from receiver.services import Services
from store import connect, keys, series
from store.connection import connect_store, now_ms, redis_target
from store.notifications import Notifications
from store.outbox import Outbox
from store.partitions import Partitions
from store.quarantine import Quarantine
from store.records import Filter, RequestRecord, Requests, Submission
from store.retries import Retried, Retries
from store.scripts import ScriptArg, Scripts
from store.sweep import Sweeper
from store.tenants import Tenant, move_aliases
from tests.support.api import submit as submit_api
from tests.support.api import wait_status
from tests.support.notify_receiver import NEW_SECRET, Receiver
from tests.support.services import KEY_A
from tests.support.signed_callbacks import delivery
from workers.notifying import Notifier

DB = 4
TTL = 3600
PARTS = Partitions(4)
WRONG_URL = "https://answerback.example"  # where a proxy in front of web is reached, say


class InPartition:
    """A store class's scripts run in one partition: test data made by store classes that do
    not take partitions themselves."""

    def __init__(self, scripts: Scripts, at: str) -> None:
        self.scripts, self.at = scripts, at

    def __call__(self, name: str, *args: ScriptArg, at: str = "") -> object:
        return self.scripts(name, *args, at=self.at)

    def replicated(self, min_replicas: int, name: str, *args: ScriptArg, at: str = "") -> object:
        return self.scripts(name, *args, at=self.at)


@pytest.fixture
def store(redis_server) -> Iterator[Any]:
    client = connect(redis_server.url.rsplit("/", 1)[0] + f"/{DB}")
    client.flushdb()
    yield client
    client.close()


def submit(
    redis: Any, p: int, tenant: str = "t", notify_url: str = "", timeout: int = 60, parts: Partitions = PARTS
) -> str:
    """A request of `tenant` in partition p, as the submit script makes one there."""
    host = HostPolicy.parse(("127.0.0.1",)).check_url(notify_url).authority if notify_url else ""
    sub = Submission(
        tenant, "POST", "Message/", {"text": "hi"}, "POST", timeout, notify_url=notify_url, notify_host=host
    )
    _, _, _, args = Requests(redis, TTL).submit_args(sub)
    rid = parts.new_id(p)
    Scripts(redis)("submit", rid, *args[1:], at=parts.prefix(p))
    return rid


def settle_all(redis: Any, p: int, verdict: str = "completed", parts: Partitions = PARTS) -> list[str]:
    """Send every queued request of partition p and settle it so, as a drain job there would."""
    outbox = Outbox(redis, TTL, max_drainers=1)
    outbox.scripts = InPartition(outbox.scripts, parts.prefix(p))  # type: ignore[assignment]
    done = []
    while claimed := outbox.claim("test", {keys.API: 500}, [], may_leave=False).items:
        for item in claimed:
            outbox.mark_sending(item)
            if verdict == "completed":
                outbox.completed(item, {"message": "sent"})
            else:
                outbox.failed(item, {"error": "refused upstream"})
            done.append(item.rid)
    return done


def record(redis: Any, rid: str, parts: Partitions = PARTS) -> RequestRecord | None:
    """A request's record, read in its partition."""
    fields = Scripts(redis)("read", rid, at=parts.at(rid))
    pairs = dict(zip(fields[::2], fields[1::2], strict=True))  # type: ignore[index]
    return RequestRecord(pairs) if pairs.get("tenant") else None


def partitions_written(redis: Any) -> set[str]:
    return {name[: name.index("}:") + 2] for name in redis.scan_iter(keys.PREFIX + "{*", count=1000)}


def test_notifications_due_in_every_partition_are_all_delivered(store):
    receiver = Receiver().start()
    settings = Settings(notify_hosts=("127.0.0.1",), webhook_secrets=(NEW_SECRET,), notify_timeout=2)
    notifications = Notifications(store, settings.notify_lease_ms, partitions=PARTS)
    rids = [submit(store, p, notify_url=receiver.url) for p in range(4) for _ in range(3)]
    for p in range(4):
        settle_all(store, p)
    assert len(partitions_written(store)) == 4
    stopping = threading.Event()
    notifier = Notifier(settings, notifications, stopping)
    notifier.start()
    try:
        wait_for(lambda: all(receiver.events(rid) for rid in rids), 10, 0.02, "every notification")
        wait_for(
            lambda: all(record(store, rid).fields.get("notify_status") == "delivered" for rid in rids),  # type: ignore[union-attr]
            5,
            0.02,
            "every notification settled as delivered",
        )
    finally:
        stopping.set()
        notifier.join(5)
        receiver.stop()
    assert all(len(receiver.events(rid)) == 1 for rid in rids)
    assert all([a["outcome"] for a in notifications.attempts(rid)] == ["delivered"] for rid in rids)


class Counted:
    """Scripts that count the calls of each name."""

    def __init__(self, scripts: Scripts) -> None:
        self.scripts, self.calls = scripts, Counter[str]()

    def __call__(self, name: str, *args: ScriptArg, at: str = keys.PREFIX) -> object:
        self.calls[name] += 1
        return self.scripts(name, *args, at=at)


def test_a_hosts_room_holds_across_partitions_and_claims_start_each_in_turn(store):
    """A host with room for 2 gets 2 from one claim, not 2 from each partition; successive
    claims look at a different partition first, so none is always served first. An idle
    claim runs no script: it reads which partitions have something due first."""
    notifications = Notifications(store, lease_ms=60_000, partitions=PARTS)
    notifications.scripts = counted = Counted(notifications.scripts)  # type: ignore[assignment]
    assert notifications.claim(10, {}, host_room=2) == [] and counted.calls["notify_claim"] == 0
    url = "http://127.0.0.1:9/hook"
    rids = [submit(store, p, notify_url=url) for p in range(4) for _ in range(2)]
    for p in range(4):
        settle_all(store, p)
    claimed = notifications.claim(10, {}, host_room=2)
    assert len(claimed) == 2
    firsts = [PARTS.of(due.rid) for due in claimed[:1]]
    firsts += [PARTS.of(notifications.claim(1, {}, host_room=1)[0].rid) for _ in range(3)]
    assert len(set(firsts)) == 4
    assert len({due.rid for due in claimed}) == 2 and set(rids) >= {due.rid for due in claimed}


def test_a_retry_lands_in_its_originals_partition_and_completes(store):
    retries = Retries(store, TTL, partitions=PARTS)
    for p in range(4):
        old = submit(store, p)
        settle_all(store, p, "failed")
        retried = retries.retry(old, "t")
        assert retried.outcome == "created" and PARTS.of(retried.value) == p
        assert retries.retry(old, "t") == Retried("retried", retried.value, "")
        assert settle_all(store, p) == [retried.value]
        new = record(store, retried.value)
        assert new is not None and new.status == "completed" and new.fields["retry_of"] == old
        assert record(store, old).fields["retried_as"] == retried.value  # type: ignore[union-attr]
    assert len(partitions_written(store)) == 4


class CutOff(Exception):
    pass


class CountingCutOff:
    """Scripts that run every retry but are cut off before counting a bulk retry's step."""

    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts

    def __call__(self, name: str, *args: ScriptArg, at: str = keys.PREFIX) -> object:
        if name == "bulk_retry":
            raise CutOff
        return self.scripts(name, *args, at=at)


def test_a_bulk_retry_over_every_partition_retries_each_once_and_counts_exactly(store):
    """Failed requests in every partition, one of them retried alone before the bulk gets to
    it; the first step is cut off after its retries, before counting them: done again, it
    retries nothing twice and counts each request once."""
    retries = Retries(store, TTL, partitions=PARTS)
    for p in range(4):
        [submit(store, p) for _ in range(3)]
        settle_all(store, p, "failed")
    submit(store, 0, tenant="other")
    settle_all(store, 0, "failed")
    total, rids = retries.matching("t", Filter())
    assert total == 12 and {PARTS.of(rid) for rid in rids} == {0, 1, 2, 3}
    alone = retries.retry(rids[-1], "t").value
    bulk_id = retries.start("t", rids)
    home = PARTS.prefix(PARTS.home(bulk_id))
    assert store.exists(keys.at(home, keys.bulk_retry(bulk_id)), keys.at(home, keys.bulk_retry_rids(bulk_id))) == 2

    scripts, retries.scripts = retries.scripts, CountingCutOff(retries.scripts)  # type: ignore[assignment]
    with pytest.raises(CutOff):
        retries.work(5)
    retries.scripts = scripts
    assert retries.progress(bulk_id, ("t",))["retried"] == 0  # type: ignore[index]
    while store.zcard(keys.at(home, keys.BULK_RETRIES)):
        retries.work(5)
    progress = retries.progress(bulk_id, ("t",))
    assert progress is not None
    assert (progress["status"], progress["count"], progress["retried"], progress["skipped"]) == ("done", 12, 11, 1)
    made = [record(store, rid).fields["retried_as"] for rid in rids]  # type: ignore[union-attr]
    assert made[-1] == alone and len(set(made)) == 12
    assert all(PARTS.of(new) == PARTS.of(rid) for rid, new in zip(rids, made, strict=True))
    assert not store.exists(keys.at(home, keys.bulk_retry_plan(bulk_id)), keys.at(home, keys.bulk_retry_rids(bulk_id)))


def test_a_refused_callback_is_kept_with_its_requests_event_and_applied_once(store):
    quarantine = Quarantine(store, 600, 1_000_000, partitions=PARTS)
    at = quarantine.at
    rid = submit(store, next(p for p in range(4) if PARTS.prefix(p) != at))
    description = {"reason": "signature", "rid": rid, "method": "POST", "path": "/cb", "query": f"rid={rid}"}
    assert quarantine.keep({**description, "headers": {}, "size": 2}, b"{}", "invalid")
    assert quarantine.keep({**description, "rid": PARTS.new_id(0), "headers": {}, "size": 2}, b"{}", "invalid")
    total, page = quarantine.page(0, 10)
    assert total == 2 and [entry["known_request"] for entry in page] == [False, True]
    events = store.lrange(keys.at(PARTS.at(rid), keys.events(rid)), 0, -1)
    assert len(events) == 1 and '"verdict":"refused"' in events[0]
    assert store.exists(keys.at(at, keys.QUARANTINE), keys.at(at, keys.QUARANTINE_ENTRIES)) == 2
    [kept] = [entry for entry in quarantine.entries(quarantine.ids()) if entry.description["rid"] == rid]
    assert quarantine.remove(kept.id, "matched") and not quarantine.remove(kept.id, "matched")
    assert quarantine.size() == 1 and store.hget(keys.at(at, keys.METRICS), "quarantine_applied_matched") == "1"
    pattern = keys.at(keys.PREFIX + "{*}:", keys.series(series.scope_of("t"), "*"))
    figures = [store.hgetall(name) for name in store.scan_iter(pattern)]
    assert sum(int(n) for block in figures for f, n in block.items() if f.endswith("r")) == 1


def test_an_aliass_requests_move_from_every_partition(store):
    scripts = Scripts(store)
    rids = []
    for p in range(4):
        rids.append(submit(store, p, tenant="old"))
        idem = keys.at(PARTS.prefix(p), keys.idempotency("old", f"digest{p}"))
        store.set(idem, f"{rids[-1]} body", ex=600)
        store.hincrby(keys.at(PARTS.prefix(p), keys.series(series.scope_of("old"), 1)), "0s", 1)
    assert move_aliases(store, scripts, [Tenant("new", ("old",))], PARTS) == 4
    assert move_aliases(store, scripts, [Tenant("new", ("old",))], PARTS) == 0
    assert {record(store, rid).tenant for rid in rids} == {"new"}  # type: ignore[union-attr]
    for p, rid in enumerate(rids):
        prefix = PARTS.prefix(p)
        assert store.zrange(keys.at(prefix, keys.tenant_requests("new")), 0, -1) == [rid]
        assert store.get(keys.at(prefix, keys.idempotency("new", f"digest{p}"))) == f"{rid} body"
        assert store.hget(keys.at(prefix, keys.series(series.scope_of("new"), 1)), "0s") == "1"
    assert not [name for name in store.scan_iter(count=1000) if ":old:" in name or name.endswith(":old")]


def test_the_operators_steps_run_on_a_cluster_without_crossing_slots(redis_cluster):
    """Every step above on a real Redis Cluster with 24 partitions over 3 primaries, where a
    command or script touching two slots is refused: notifications claimed and settled, a
    retry and a bulk retry, the quarantine kept, read and emptied, an alias moved."""
    parts = Partitions(24)
    settings = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_CLUSTER_NODES": redis_cluster.seeds})
    client = connect_store(redis_target(settings))
    url = "http://127.0.0.1:9/hook"
    spread = [p * 6 for p in range(4)]  # partitions on more than one primary
    rids = [submit(client, p, notify_url=url, parts=parts) for p in spread]
    for p in spread:
        settle_all(client, p, "failed", parts=parts)
    notifications = Notifications(client, lease_ms=60_000, partitions=parts)
    claimed = notifications.claim(10, {}, host_room=10)
    assert sorted(due.rid for due in claimed) == sorted(rids)
    for due in claimed:
        assert notifications.settle(due, "delivered", {"outcome": "delivered"})
        assert [a["outcome"] for a in notifications.attempts(due.rid)] == ["delivered"]

    retries = Retries(client, TTL, partitions=parts)
    assert parts.of(retries.retry(rids[0], "t").value) == parts.of(rids[0])
    total, matched = retries.matching("t", Filter())
    assert total == 4 and set(matched) == set(rids)
    bulk_id = retries.start("t", matched)
    while retries.work(2) or client.zcard(keys.at(parts.prefix(parts.home(bulk_id)), keys.BULK_RETRIES)):
        pass
    progress = retries.progress(bulk_id, ("t",))
    assert progress is not None and (progress["retried"], progress["skipped"]) == (3, 1)

    quarantine = Quarantine(client, 600, 1_000_000, partitions=parts)
    for rid in (rids[1], parts.new_id(5)):
        description = {"reason": "signature", "rid": rid, "method": "POST", "headers": {}, "size": 2}
        assert quarantine.keep(description, b"{}", "invalid")
    total, page = quarantine.page(0, 10)
    assert total == quarantine.size() == 2 and {entry["known_request"] for entry in page} == {True, False}
    assert all(quarantine.remove(entry.id, "matched") for entry in quarantine.entries(quarantine.ids()))

    assert move_aliases(client, Scripts(client), [Tenant("new", ("t",))], parts) == 4 + 4
    assert {record(client, rid, parts).tenant for rid in rids} == {"new"}  # type: ignore[union-attr]


def test_notifications_are_claimed_on_the_other_shards_while_one_is_down(redis_cluster):
    """One shard of the cluster down (before its replica takes over): the notifier's claim passes
    over its partitions and takes what is due in the others, rather than failing whole."""
    parts = Partitions(24)
    settings = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_CLUSTER_NODES": redis_cluster.seeds})
    client = connect_store(redis_target(settings))
    victim = redis_cluster.primary_of(parts.prefix(0))
    live = next(p for p in range(parts.count) if redis_cluster.primary_of(parts.prefix(p)) is not victim)
    rid = submit(client, live, notify_url="http://127.0.0.1:9/hook", parts=parts)
    settle_all(client, live, parts=parts)
    redis_cluster.kill(victim)
    claimed = Notifications(client, lease_ms=60_000, partitions=parts).claim(10, {}, host_room=10)
    assert [due.rid for due in claimed] == [rid]


def test_a_partitioned_stack_retries_in_bulk_notifies_and_applies_quarantined_callbacks(make_stack, sandbox):
    """Web and a worker on four partitions: expired requests of every partition retried in
    bulk (exact progress, each retry completed in its original's partition), every
    notification delivered, and callbacks refused under a wrong PUBLIC_URL kept in the
    quarantine, then applied by the re-check of a web with that URL."""
    receiver = Receiver().start()
    stack = make_stack(db=DB, workers=0, STORE_PARTITIONS="4", NOTIFY_HOSTS="127.0.0.1", WEBHOOK_SECRET=NEW_SECRET)
    sandbox.faults(drop_callback={"rate": 1.0, "paths": ["Message/"]})
    try:
        with stack.web.client(KEY_A) as api:
            old = [submit_api(api, callback_timeout=1, notify_url=receiver.url)["request_id"] for _ in range(8)]
            held = [submit_api(api, "POST", "Message/")["request_id"] for _ in range(4)]
            Sweeper(stack.redis, TTL, partitions=PARTS).sweep(now_ms() + 2000)
            started = api.post("/v1/requests/retry", json={}).json()
            assert started["count"] == 8
            stack.start_worker()
            progress = wait_for(
                lambda: (p := api.get(f"/v1/requests/retry/{started['bulk_id']}").json())["status"] == "done" and p,
                20,
                0.05,
                "the bulk retry to finish",
            )
            assert (progress["count"], progress["retried"], progress["skipped"]) == (8, 8, 0)
            new = [api.get(f"/v1/requests/{rid}").json()["retried_as"] for rid in old]
            assert [PARTS.of(rid) for rid in new] == [PARTS.of(rid) for rid in old]
            for rid in new:
                wait_status(api, rid, "completed")
            wait_for(lambda: all(receiver.events(rid) for rid in old + new), 15, 0.05, "every notification")
            pending = [wait_status(api, rid, "pending") for rid in held]
            with httpx.Client(base_url=stack.web.url) as hooks:
                refused = [delivery(hooks, WRONG_URL, record) for record in pending]
            assert [answer.status_code for answer in refused] == [403] * 4  # type: ignore[union-attr]
            quarantine = Quarantine(stack.redis, 600, 1_000_000, partitions=PARTS)
            assert quarantine.size() == 4
            web = Services.build(Settings.from_env({**stack.env, "PUBLIC_URL": WRONG_URL}))
            assert recheck(web)["outcomes"] == {"matched": 4}  # as a web so started re-checks
            assert quarantine.size() == 0
            for rid in held:
                assert wait_status(api, rid, "completed")
                events = api.get(f"/v1/requests/{rid}/events").json()["events"]
                assert [e["verdict"] for e in events if e["event"] == "callback"] == ["refused", "matched"]
    finally:
        receiver.stop()
    assert all(len(receiver.events(rid)) == 1 for rid in old + new)
    assert len(partitions_written(stack.redis)) == 4
