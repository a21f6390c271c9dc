"""What a test does through the public API, and what it then finds in Redis."""

from __future__ import annotations

from typing import Any

import httpx

from local.processes import wait_for
from store import keys


def submit(
    api: httpx.Client, method: str = "POST", path: str = "Call/", params: dict | None = None, **extra: Any
) -> dict[str, Any]:
    body = {"method": method, "path": path, "params": params if params is not None else {"to": "14155550101"}}
    answer = api.post("/v1/requests", json=body | extra)
    assert answer.status_code == 202, answer.text
    return answer.json()


# A callback_timeout for a request that must be sent before it expires (a request not sent
# within it never is): room for a busy machine. A callback meant to come late is delayed 3 s
# more, past the sweep that expires the request (every SWEEP_INTERVAL).
SENT_THEN_EXPIRED_S = 3


def wait_worker(api: httpx.Client) -> None:
    """Until a worker heart-beats on the web's queue: it will send what is submitted next."""
    wait_for(lambda: api.get("/v1/status").json()["workers_alive"], 15, 0.05, "a worker's heartbeat")


def wait_status(api: httpx.Client, rid: str, statuses: set[str] | str, timeout: float = 15) -> dict[str, Any]:
    wanted = {statuses} if isinstance(statuses, str) else statuses

    def reached():
        record = api.get(f"/v1/requests/{rid}").json()
        return record if record["status"] in wanted else None

    return wait_for(reached, timeout, 0.05, f"request {rid} to reach {wanted}")


# The quarantine's keys, and the lock a web process holds while it re-checks them at start (a
# web starting during a test, the session's own among them, takes it for a moment).
QUARANTINE_KEYS = (
    keys.QUARANTINE,
    keys.QUARANTINE_ENTRIES,
    keys.QUARANTINE_BYTES,
    keys.QUARANTINE_UNKNOWN,
    keys.QUARANTINE_UNKNOWN_BYTES,
    keys.QUARANTINE_LOCK,
)


def written_keys(redis) -> list[str]:
    """Answerback's data keys in Redis: not the sweep's lock and mark (workers set them every
    second), the processes' heartbeats, the metrics counters, the tenant salt, the quarantine
    (a refused callback is counted and quarantined, never stored as a delivery;
    tests/test_quarantine.py checks the quarantine) nor the figures over time (it counts there
    too; tests/test_series.py)."""
    kept = (keys.SWEEP_LOCK, keys.SWEEP_LAST, keys.PROCESSES, keys.PROCESS_BEATS, keys.METRICS, keys.TENANT_SALT)
    return [
        k
        for k in redis.scan_iter(keys.PREFIX + "*")
        if k not in (*kept, *QUARANTINE_KEYS) and not k.startswith(keys.SERIES_PREFIX)
    ]
