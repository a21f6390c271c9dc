"""store/tenants.py, receiver/auth.py: an unnamed key's tenant id is salted per deployment,
and the ids a key had before (unsalted, or unnamed before its rotation) are aliases whose
requests stay readable, idempotency-protected and, once moved, listed under the tenant."""

from __future__ import annotations

import hashlib
import threading

from local.processes import wait_for
from store import keys, series
from store.records import Requests, Submission
from store.tenants import Tenant, move_aliases, salt
from tests.support.services import KEY_A

K, K2, OTHER = "tenant-test-key-1", "tenant-test-key-2-rotated", "tenant-test-other-key"
BODY = {"method": "POST", "path": "Call/", "params": {"to": "14155550101"}}


def unsalted(key: str) -> str:
    """The tenant id of an unnamed key before ids were salted."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def submitted_as_before(requests: Requests, tenant: str, idem: str | None = None) -> str:
    """A submission as versions before the salt stored it: the same script, under the unsalted
    id, with no alias to check."""
    sub = Submission(tenant, "POST", "Call/", {"to": "14155550101"}, "POST", 60, idempotency_key=idem)
    return requests.submit(sub).record.fields["request_id"]


def test_a_request_filed_under_an_alias_is_read_and_answers_its_idempotency_key(redis):
    requests = Requests(redis, 600)
    old, new = unsalted(K), keys.salted_tenant(salt(redis), K)
    first = submitted_as_before(requests, old, idem="once")
    assert requests.get_for(new, first, (old,)) is not None
    assert requests.get_for(new, first) is None and requests.get_for(unsalted(OTHER), first, (new,)) is None
    sub = Submission(new, "POST", "Call/", {"to": "14155550101"}, "POST", 60, idempotency_key="once", aliases=(old,))
    again = requests.submit(sub)
    assert not again.created and again.record.fields["request_id"] == first
    assert redis.zcard(keys.tenant_requests(new)) == 0


def test_an_aliass_requests_move_whole_and_once_even_from_two_processes(redis):
    requests = Requests(redis, 600)
    old, new, bystander = unsalted(K), keys.salted_tenant(salt(redis), K), unsalted(OTHER)
    rids = {submitted_as_before(requests, old, idem=f"i{n}") for n in range(5)}
    theirs = submitted_as_before(requests, bystander, idem="i0")
    idem = keys.idempotency(old, hashlib.sha256(b"i3").hexdigest())
    ttl = redis.pttl(idem)
    tenant = Tenant(new, (old,))
    runs = [threading.Thread(target=move_aliases, args=(redis, requests.scripts, [tenant])) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert move_aliases(redis, requests.scripts, [tenant]) == 0
    assert set(redis.zrange(keys.tenant_requests(new), 0, -1)) == rids
    assert set(redis.zrange(keys.tenant_requests(new, "queued"), 0, -1)) == rids
    assert {requests.get(rid).tenant for rid in rids} == {new}
    assert not redis.keys(f"{keys.PREFIX}*{old}*")
    figures = [redis.hgetall(name) for name in redis.scan_iter(keys.series(series.scope_of(new), "*"))]
    assert sum(int(n) for block in figures for f, n in block.items() if f.endswith("s")) == len(rids)
    moved = keys.idempotency(new, hashlib.sha256(b"i3").hexdigest())
    assert 0 < ttl - redis.pttl(moved) < 5000
    assert requests.get(theirs).tenant == bystander
    assert redis.zcard(keys.tenant_requests(bystander)) == 1


def test_keys_tenants_stay_theirs_across_the_salt_and_a_rotation(make_stack, api, redis):
    # The session's web (database 0) is one deployment, this stack another: same key, other id.
    ours = api.post("/v1/requests", json=BODY).json()["request_id"]
    session_tenant = Requests(redis, 60).get(ours).tenant
    assert session_tenant not in (unsalted(KEY_A), "") and redis.exists(keys.tenant_requests(session_tenant))

    stack = make_stack(db=14, workers=0, API_KEYS=f"{K},{OTHER},{KEY_A}", TENANT_MOVE_INTERVAL="0.2")
    store = Requests(stack.redis, 600)
    web = stack.web
    with web.client(K) as k, web.client(OTHER) as other, web.client(KEY_A) as a:
        theirs = a.post("/v1/requests", json=BODY).json()["request_id"]
        assert store.get(theirs).tenant not in (session_tenant, unsalted(KEY_A))
        # Written by a process of the version before, during a rolling deployment.
        legacy = [submitted_as_before(store, unsalted(K), idem="legacy-1"), submitted_as_before(store, unsalted(K))]
        wait_for(lambda: k.get("/v1/requests").json()["meta"]["total_count"] == 2, 10, 0.05, "the move")
        tenant = store.get(legacy[0]).tenant
        assert tenant == keys.salted_tenant(stack.redis.get(keys.TENANT_SALT), K) != unsalted(K)
        assert not stack.redis.keys(f"{keys.PREFIX}*{unsalted(K)}*")
        again = k.post("/v1/requests", json=BODY, headers={"Idempotency-Key": "legacy-1"})
        assert again.json()["request_id"] == legacy[0]
        assert all(k.get(f"/v1/requests/{rid}").status_code == 200 for rid in legacy)
        legacy.append(k.post("/v1/requests", json=BODY).json()["request_id"])
        assert other.get("/v1/requests").json()["meta"]["total_count"] == 0

    # The salt deleted (by hand, or a restore without it): the web that holds it puts it back,
    # so that a web starting later reads the same one; another salt in its place is an error.
    # Every web process has beaten first, so each holds the salt: one still starting would make
    # a second salt (its first read finding none), which is what the error below is for.
    wait_for(lambda: stack.redis.zcard(keys.PROCESSES) == 2, 30, 0.05, "both web processes to beat")
    held = stack.redis.get(keys.TENANT_SALT)
    stack.redis.delete(keys.TENANT_SALT)
    try:
        wait_for(lambda: stack.redis.get(keys.TENANT_SALT) == held, 10, 0.05, "the salt put back")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; web's log:\n{web.service.log()[-4000:]}") from None
    stack.redis.set(keys.TENANT_SALT, "00" * 32)
    wait_for(lambda: "is not the one this process uses" in web.service.log(), 10, 0.05, "the salt error")
    stack.redis.set(keys.TENANT_SALT, held)

    # The rotation: K becomes acme's, with a new key K2; "x:tiny9q" is one key by accident.
    web.service.stop()
    stack.env["API_KEYS"] = f"acme:{K},acme:{K2},{OTHER},x:tiny9q"
    web = stack.start_web()
    with web.client(K) as k, web.client(K2) as k2, web.client(OTHER) as other:
        assert all(k2.get(f"/v1/requests/{rid}").status_code == 200 for rid in legacy)
        wait_for(lambda: k2.get("/v1/requests").json()["meta"]["total_count"] == 3, 10, 0.05, "the move")
        for client in (k, k2):
            pages = [client.get("/v1/requests", params={"limit": 1, "offset": n}).json() for n in range(3)]
            assert sorted(p["objects"][0]["request_id"] for p in pages) == sorted(legacy)
        assert {store.get(rid).tenant for rid in legacy} == {keys.named_tenant("acme")}
        assert other.get("/v1/requests").json()["meta"]["total_count"] == 0
        assert all(other.get(f"/v1/requests/{rid}").status_code == 404 for rid in legacy)
    log = web.service.log()
    assert "WARNING" in log and "API_KEYS entry 4 is read as `name:key`" in log
    assert "serving 4 API keys: 1 of unnamed tenants, named tenants: acme" in log
    assert not any(secret in log for secret in (K, K2, OTHER, "tiny9q"))
