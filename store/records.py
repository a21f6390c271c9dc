"""Requests as the client sees them: submit, read, list."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from redis import Redis
from redis.exceptions import RedisError

from config import Settings
from store import keys, listing
from store.connection import now_ms
from store.partitions import ONE, Partitions
from store.rate_limits import api_class
from store.record_format import pairs
from store.scripts import Scripts

log = logging.getLogger(__name__)

STATUSES = ("queued", "sending", "pending", "completed", "failed", "expired")
FINAL = frozenset({"completed", "failed", "expired"})
DRAINER_STALE_MS = Settings.drainer_stale_seconds * 1000  # the setting's default, for callers that give none


def new_id() -> str:
    """A UUIDv7 in no partition in particular (store/partitions.py `new_id`): for ids that name
    no request (drain jobs, claims, bulk retries, spool files)."""
    return ONE.new_id()


def iso(ms: str | int | None) -> str | None:
    if not ms:
        return None
    moment = datetime.fromtimestamp(int(float(ms)) / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def json_field(raw: str | None) -> Any:
    """A record field holding JSON (response, error, params), or None where unset."""
    return json.loads(raw) if raw else None


def webhook_id(rid: str, event: str | int) -> str:
    """The webhook-id of a request's notification event: the same for every attempt of
    that event, new for the next event (a late completion after expiry, a replay)."""
    return f"msg_{rid}_{event}"


def _notify(f: dict[str, str]) -> dict[str, Any] | None:
    if not f.get("notify_url"):
        return None
    event = f.get("notify_event")
    return {
        "url": f["notify_url"],
        "status": f.get("notify_status", "pending"),
        "attempts": int(f.get("notify_attempts", 0)),
        "last_error": f.get("notify_error") or None,
        "delivered_at": iso(f.get("notify_delivered_at")),
        "webhook_id": webhook_id(f["request_id"], event) if event else None,
    }


@dataclass(frozen=True)
class RequestRecord:
    fields: dict[str, str]

    @property
    def status(self) -> str:
        return self.fields["status"]

    @property
    def tenant(self) -> str:
        return self.fields.get("tenant", "")

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    def to_json(self) -> dict[str, Any]:
        f = self.fields
        return {
            "request_id": f["request_id"],
            "status": f["status"],
            "method": f["method"],
            "path": f["path"],
            "callback_method": f.get("callback_method"),
            "api_id": f.get("api_id") or None,
            "submitted_at": iso(f.get("submitted_at")),
            "sent_at": iso(f.get("sent_at")),
            "completed_at": iso(f.get("completed_at")),
            "deadline": iso(f.get("deadline")),
            "attempts": int(f.get("attempts", 0)),
            "late": f.get("late") == "1",
            "deliveries": int(f.get("deliveries", 0)),
            "response": json_field(f.get("response")),
            "error": json_field(f.get("error")),
            "notify": _notify(f),
            "retry_of": f.get("retry_of") or None,
            "retried_as": f.get("retried_as") or None,
        }


@dataclass(frozen=True)
class Filter:
    """What GET /v1/requests narrows a tenant's requests to; every part optional, combined with AND."""

    status: str | None = None
    path: str | None = None
    since: int | None = None  # ms, inclusive, on submitted_at
    until: int | None = None  # ms, inclusive: up to the end of that millisecond

    def bounds(self) -> tuple[str, str]:
        """The time range as the `page` script's score bounds ('' for open): submitted_at has
        microseconds, so `until`'s millisecond ends just before the next one."""
        since = "" if self.since is None else str(self.since)
        until = "" if self.until is None else f"({self.until + 1}"
        return since, until

    def admits(self, record: RequestRecord) -> bool:
        f = record.fields
        at = float(f.get("submitted_at") or 0)
        return (
            (self.status is None or record.status == self.status)
            and (self.path is None or f.get("path") == self.path)
            and (self.since is None or at >= self.since)
            and (self.until is None or at < self.until + 1)
        )


@dataclass(frozen=True)
class Submission:
    tenant: str
    method: str
    path: str
    params: dict[str, Any]
    callback_method: str
    callback_timeout: int
    idempotency_key: str | None = None
    notify_url: str = ""
    notify_host: str = ""  # host:port of notify_url: notifications to one host share its concurrency
    aliases: tuple[str, ...] = ()  # ids the tenant's key had before (store/tenants.py)


@dataclass(frozen=True)
class Submitted:
    record: RequestRecord
    created: bool  # False: an earlier submission with the same Idempotency-Key
    ring_id: str  # a drain job to enqueue, or ""
    conflict: bool = False  # the Idempotency-Key was used with another body


class Requests:
    """The request records of every tenant."""

    def __init__(
        self,
        redis: Redis,
        result_ttl: int,
        drainer_stale_ms: int = DRAINER_STALE_MS,
        min_replicas: int = 0,
        *,
        partitions: Partitions = ONE,
    ) -> None:
        self.redis = redis
        self.partitions = partitions
        self.min_replicas = min_replicas
        self.result_ttl = result_ttl
        self.drainer_stale_ms = drainer_stale_ms
        self.scripts = Scripts(redis)

    def submit(self, sub: Submission) -> Submitted:
        rid, submitted_at, body_digest, args = self.submit_args(sub)
        at = self.partitions.at(rid)
        if self.min_replicas:
            answer = cast("list[str]", self.scripts.replicated(self.min_replicas, "submit", *args, at=at))
        else:
            answer = cast("list[str]", self.scripts.retried("submit", *args, at=at))  # web's hot path
        submitted = self._submitted(sub, rid, submitted_at, body_digest, str(args[4]), answer)
        register_ring(self.redis, self.partitions, submitted.ring_id, at)
        return submitted

    def submit_args(self, sub: Submission) -> tuple[str, str, str, tuple[str | int, ...]]:
        """A new request id, its submission time, its body's digest (with an Idempotency-Key)
        and the `submit` script's arguments (the fifth: the params as stored; bench/console.py
        runs them in pipelines), to run in the rid's partition. With an Idempotency-Key the rid
        is in the key digest's partition, where its repeats look for it."""
        now, submitted_at = now_ms(), submission_time()
        params = json.dumps(sub.params, separators=(",", ":"), sort_keys=True)
        idem_key = idem_value = body_digest = ""
        alias_idem_keys: list[str] = []
        if sub.idempotency_key is None:
            rid = self.partitions.new_id()
        else:
            key_digest = _digest(sub.idempotency_key)
            rid = self.partitions.new_id(self.partitions.home(key_digest))
            prefix = self.partitions.at(rid)
            idem_key = keys.at(prefix, keys.idempotency(sub.tenant, key_digest))
            alias_idem_keys = [keys.at(prefix, keys.idempotency(alias, key_digest)) for alias in sub.aliases]
            body_digest = _digest(" ".join(filter(None, (sub.method, sub.path, params, sub.notify_url))))
            idem_value = f"{rid} {body_digest}"
        args: tuple[str | int, ...] = (
            rid,
            sub.tenant,
            sub.method,
            sub.path,
            params,
            sub.callback_method,
            submitted_at,
            sub.callback_timeout,
            idem_key,
            idem_value,
            self.result_ttl,
            new_id(),
            now - self.drainer_stale_ms,
            api_class(sub.method, sub.path),
            sub.notify_url,
            sub.notify_host,
            sub.idempotency_key or "",
            *alias_idem_keys,
        )
        return rid, submitted_at, body_digest, args

    def _submitted(
        self, sub: Submission, rid: str, submitted_at: str, body_digest: str, params: str, answer: list[str]
    ) -> Submitted:
        """What the submit script's answer means. With min_replicas an accepted submission survives
        a failover; NotReplicated is an outage (503) and may still have stored it: a retry with the
        Idempotency-Key finds it."""
        if answer[0] == "existing":
            first_rid, first_digest = answer[1].split(" ")
            record = self.get(first_rid)
            assert record is not None  # it outlives its Idempotency-Key, kept result_ttl from submission
            conflict = first_digest != body_digest
            return Submitted(record, created=False, ring_id="", conflict=conflict)
        fields = {
            "request_id": rid,
            "tenant": sub.tenant,
            "status": "queued",
            "method": sub.method,
            "path": sub.path,
            "callback_method": sub.callback_method,
            "submitted_at": submitted_at,
            "params": params,
        }
        if sub.notify_url:
            fields |= {"notify_url": sub.notify_url, "notify_host": sub.notify_host, "notify_status": "pending"}
        return Submitted(RequestRecord(fields), created=True, ring_id=answer[1])

    def get(self, rid: str) -> RequestRecord | None:
        fields = pairs(cast("list[str]", self.scripts("read", rid, at=self.partitions.at(rid))))
        return RequestRecord(fields) if fields.get("tenant") else None

    def get_for(self, tenant: str, rid: str, aliases: tuple[str, ...] = ()) -> RequestRecord | None:
        """The record if it is the tenant's, or still filed under one of its aliases (ids its key
        had before, until store/tenants.py moves it)."""
        record = self.get(rid)
        return record if record and (record.tenant == tenant or record.tenant in aliases) else None

    def rid_for_api_id(self, api_id: str) -> str | None:
        """With partitions, the api_id's home pointer names the rid (one GET), then the index
        in the rid's partition, which the scripts keep, confirms it: a pointer written before a
        script that then failed, or by a callback naming another request, names no request."""
        if self.partitions.count == 1:
            return cast("str | None", self.redis.get(keys.api_id(api_id)))
        rid = cast("str | None", self.redis.get(api_id_pointer(self.partitions, api_id)))
        if rid is None or not _is_id(rid):
            return None
        indexed = self.redis.get(keys.at(self.partitions.at(rid), keys.api_id(api_id)))
        return rid if indexed == rid else None

    def page(self, tenant: str, filt: Filter, offset: int, limit: int) -> tuple[int, list[RequestRecord]]:
        """Newest first; `offset` counts records, as Plivo's lists do. The filter picks one index
        (all, by status, by path and status; a path alone merges its statuses') and pages it by
        time: the total is exact. Over several partitions store/listing.py merges their pages."""
        since, until = filt.bounds()
        query = (tenant, filt.status or "", filt.path or "", since, until)
        if self.partitions.count > 1:
            total, records = listing.page(self.scripts, self.partitions, query, offset, limit, STATUSES)
        else:
            total, *rows = cast("list[Any]", self.scripts("page", *query, offset, limit, *STATUSES))
            records = [pairs(row) for row in rows]
        return total, [RequestRecord(r) for r in records if r.get("tenant")]

    def find(
        self, tenant: str, aliases: tuple[str, ...], q: str, filt: Filter, offset: int, limit: int
    ) -> tuple[int, list[RequestRecord]]:
        """The tenant's requests whose id, api_id or Idempotency-Key is `q` (each at most once),
        within the filter, newest first: a few reads by key, no scan. With several partitions the
        keys of an Idempotency-Key are in its digest's home partition and the api_id's pointer in
        the api_id's, confirmed by the index the scripts keep in the request's partition, or when
        both are one key by the record's api_id (a pointer written before a script that then
        failed names no request)."""
        owners, digest, parts = (tenant, *aliases), _digest(q), self.partitions
        idem_at = parts.prefix(parts.home(digest))
        lookups = [(idem_at, keys.at(idem_at, keys.idempotency(owner, digest))) for owner in owners]
        rids, api_id = [], ""
        if _is_id(q):
            rids.append(q.lower())
            api_id = q.lower()
            api_at = parts.prefix(parts.home(api_id))
            lookups.append((api_at, keys.at(api_at, keys.api_id(api_id))))
        found = self._values(lookups)
        by_api_id = found.pop() if api_id else None
        rids += [value.split(" ")[0] for value in found if value]
        unsure = ""  # a pointer that is its own index (the api_id's home is the request's partition)
        if by_api_id and by_api_id not in rids and parts.count > 1 and _is_id(by_api_id):
            if parts.of(by_api_id) == parts.home(api_id):
                unsure = by_api_id
            elif self.redis.get(keys.at(parts.at(by_api_id), keys.api_id(api_id))) != by_api_id:
                by_api_id = None
        rids += [by_api_id] if by_api_id else []
        records = [
            r
            for rid in dict.fromkeys(rids)
            if (r := self.get(rid))
            and r.tenant in owners
            and filt.admits(r)
            and (rid != unsure or r.fields.get("api_id") == api_id)
        ]
        records.sort(key=lambda r: float(r.fields["submitted_at"]), reverse=True)
        return len(records), records[offset : offset + limit]

    def _values(self, lookups: list[tuple[str, str]]) -> list[str | None]:
        """The value of each (partition prefix, key name): one MGET per partition, in one round trip."""
        names = [name for _, name in lookups]
        by_prefix: dict[str, list[int]] = {}
        for i, (prefix, _) in enumerate(lookups):
            by_prefix.setdefault(prefix, []).append(i)
        if len(by_prefix) == 1:
            return cast("list[str | None]", self.redis.mget(names))
        with self.redis.pipeline(transaction=False) as pipe:
            for positions in by_prefix.values():  # each in one slot: a cluster's pipeline takes it so
                pipe.execute_command("MGET", *(names[i] for i in positions))
            answers = pipe.execute()
        values: list[str | None] = [None] * len(names)
        for positions, answer in zip(by_prefix.values(), answers, strict=True):
            for i, value in zip(positions, answer, strict=True):
                values[i] = value
        return values

    def deliveries(self, rid: str) -> list[dict[str, Any]]:
        """Every delivery in the order received: the one kept as the response, then the others."""
        record = self.get(rid)
        if record is None:
            return []
        f = record.fields
        first = []
        if f.get("delivery_at"):
            first = [
                {
                    "received_at": int(f["delivery_at"]),
                    "method": f["delivery_method"],
                    "api_id": f["api_id"],
                    "body": json.loads(f["response"]),
                }
            ]
        listed = cast("list[str]", self.redis.lrange(keys.at(self.partitions.at(rid), keys.deliveries(rid)), 0, -1))
        return first + [json.loads(entry.partition(" ")[2]) for entry in listed]


def api_id_pointer(partitions: Partitions, api_id: str) -> str:
    """The api_id's home pointer (N > 1): its request id, in the api_id's own partition."""
    return keys.at(partitions.prefix(partitions.home(api_id)), keys.api_id(api_id))


def api_id_ttl(result_ttl: int, max_callback_timeout: int) -> int:
    """Seconds a home pointer is kept: the longest a request lives (sent as late as its
    callback_timeout allows, waiting that long again for its callback, then kept result_ttl)."""
    return 2 * max_callback_timeout + result_ttl


def register_ring(redis: Redis, partitions: Partitions, ring_id: str, rung_at: str) -> None:
    """A drain job rung in one partition claims from every partition: it counts as their drainer
    too from now on, so that no other partition rings one more while it starts (MAX_DRAINERS
    holds over them all, and a submission rings one drain job, not one per partition).
    Best effort: the drain job is rung already, and registers itself where it claims; a shard
    down (on a cluster) must not fail what rang it (a submission stored, a claim made)."""
    if not ring_id or partitions.count == 1:
        return
    now = now_ms()
    try:
        with redis.pipeline(transaction=False) as pipe:
            for prefix in partitions.prefixes():
                if prefix != rung_at:
                    pipe.zadd(keys.at(prefix, keys.DRAINERS), {ring_id: now}, nx=True)
            pipe.execute()
    except RedisError as exc:  # another partition may ring one more drain job meanwhile
        log.warning("could not register drain job %s in every partition (%s)", ring_id, type(exc).__name__)


def _is_id(value: str) -> bool:
    """A request id or api_id (a UUID): only such a value becomes part of a key name."""
    return len(value) == 36 and all(c in "0123456789abcdef-" for c in value.lower()) and value.count("-") == 4


def submission_time() -> str:
    """Milliseconds since the epoch with three decimals: the listing indexes order by it,
    so two submissions within one millisecond (from any web process) still list in order."""
    micros = time.time_ns() // 1000
    return f"{micros // 1000}.{micros % 1000:03d}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
