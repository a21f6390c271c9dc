"""GET /v1/status: the system's health for any API key, from the heartbeats every process
publishes (store/health.py): workers alive, the sweep's age, whether every process was given
the same settings, clocks, Redis's durability, and the problems an operator must act on.
/metrics gives the same figures (receiver/prometheus.py), the dashboard a banner per problem."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, jsonify

from receiver.auth import require_key
from receiver.services import Services, services
from store.health import WEB, Health, HealthReport, start_heartbeat, this_process

if TYPE_CHECKING:
    from flask import Flask

bp = Blueprint("health", __name__)

CLOCK_OFFSET_MAX_S = 1.0
SWEEP_LATE_MIN_S = 15.0


@dataclass(frozen=True)
class Problem:
    code: str
    message: str


# A check reads the report (and this web's settings) and answers a problem, or None.
Check = Callable[[Services, HealthReport], Problem | None]


def sweep_late_after(svc: Services) -> float:
    """The sweep's age past which it is late: a few of its intervals, and never under 15 s."""
    return max(SWEEP_LATE_MIN_S, 5.0 * svc.settings.sweep_interval)


def no_worker(svc: Services, report: HealthReport) -> Problem | None:
    if report.workers(svc.settings.queue_name):
        return None
    return Problem(
        "no_worker",
        f"No worker is alive on queue {svc.settings.queue_name!r} of this Redis database: requests stay "
        "queued and nothing expires. Start one (`python -m workers`) with the same REDIS_URL and QUEUE_NAME.",
    )


def sweep_late(svc: Services, report: HealthReport) -> Problem | None:
    age, late = report.sweep_age_s, sweep_late_after(svc)
    if age is not None and age <= late:
        return None
    when = "has not run on this Redis" if age is None else f"last ran {age:.0f} s ago"
    return Problem(
        "sweep_late",
        f"The sweep {when}: overdue requests are not expired and dead drain jobs not recovered. "
        "Every worker runs it; check that one runs and reaches Redis.",
    )


def settings_disagree(svc: Services, report: HealthReport) -> Problem | None:
    if len(report.fingerprints()) <= 1:
        return None
    return Problem(
        "settings_disagree",
        f"Processes run with different settings ({', '.join(report.differing())}): give every web and "
        "worker the same values.",
    )


def clock_offset(svc: Services, report: HealthReport) -> Problem | None:
    off = [p for p in report.processes if abs(p.offset_s) > CLOCK_OFFSET_MAX_S]
    if not off:
        return None
    named = ", ".join(f"{p.kind} on {p.host} ({p.offset_s:+.1f} s)" for p in off)
    return Problem(
        "clock_offset",
        f"Clocks differ from Redis's by more than {CLOCK_OFFSET_MAX_S:.0f} s: {named}. Deadlines and drain-job "
        "liveness come from these clocks: sync them with NTP.",
    )


def redis_not_durable(svc: Services, report: HealthReport) -> Problem | None:
    durability = report.durability
    if durability.durable is not False:
        return None
    return Problem(
        "redis_not_durable",
        f"Redis runs with appendonly={durability.appendonly} and maxmemory-policy={durability.maxmemory_policy}: "
        "a restart or an eviction loses requests and callbacks. Set appendonly yes and maxmemory-policy noeviction.",
    )


def quarantined(svc: Services, report: HealthReport) -> Problem | None:
    held = svc.quarantine.size()
    if not held:
        return None
    return Problem(
        "quarantined",
        f"{held} refused callbacks are quarantined (GET /v1/quarantine, admin key): usually PUBLIC_URL or "
        "PLIVO_AUTH_TOKEN differs between web and workers. Fix the setting, then POST /v1/quarantine/recheck.",
    )


def spool_dead_letters(svc: Services, report: HealthReport) -> Problem | None:
    """Other processes' counts as their last beat published them, this one's as it is now;
    once per spool (a web's processes on one host share theirs)."""
    own = this_process()
    found = {(p.host, p.spool): p.dead_letters for p in report.processes if own is None or p.id != own.process_id}
    if own is not None and svc.spool is not None:
        found[(own.host, str(svc.spool.directory))] = svc.spool.dead_letters()
    holding = sorted((host, spool, count) for (host, spool), count in found.items() if count)
    if not holding:
        return None
    named = ", ".join(f"{count} in {spool} on {host}" for host, spool, count in holding)
    return Problem(
        "spool_dead_letters",
        f"Spooled callbacks could not be applied and wait in dead-letters.jsonl: {named}. Each line "
        "names its error; apply what you can by hand, then empty the file (docs/operations.md, Redis outages).",
    )


# Every problem /v1/status reports and the dashboard shows as a banner, in this order. A new
# kind of problem is one more check here; its code is documented in docs/operations.md.
CHECKS: list[Check] = [
    no_worker,
    sweep_late,
    settings_disagree,
    clock_offset,
    redis_not_durable,
    quarantined,
    spool_dead_letters,
]


def problems(svc: Services, report: HealthReport) -> list[Problem]:
    return [problem for check in CHECKS if (problem := check(svc, report)) is not None]


def status(svc: Services, report: HealthReport) -> dict[str, Any]:
    heartbeat = this_process()
    offsets = sorted((p.offset_s for p in report.processes), key=abs)
    return {
        "workers_alive": len(report.workers(svc.settings.queue_name)),
        "webs_alive": sum(1 for p in report.processes if p.kind == WEB),
        "sweep_age_seconds": None if report.sweep_age_s is None else round(report.sweep_age_s, 3),
        "settings": {
            "distinct": len(report.fingerprints()),
            "differing": report.differing(),
            "fingerprints": [
                {
                    "fingerprint": fingerprint,
                    "processes": [{"kind": p.kind, "host": p.host, "pid": p.pid} for p in held],
                }
                for fingerprint, held in sorted(report.fingerprints().items())
            ],
        },
        "clock": {
            "offset_seconds": None if heartbeat is None or heartbeat.offset_s is None else round(heartbeat.offset_s, 4),
            "max_offset_seconds": round(offsets[-1], 4) if offsets else None,
        },
        "redis": {
            "durable": report.durability.durable,
            "appendonly": report.durability.appendonly,
            "maxmemory_policy": report.durability.maxmemory_policy,
        },
        "problems": [{"code": p.code, "message": p.message} for p in problems(svc, report)],
    }


@bp.get("/v1/status")
@require_key
def get_status() -> Response:
    svc = services()
    return jsonify(status(svc, Health(svc.redis).report()))


def start(app: Flask) -> None:
    """A web process serving `app` publishes its heartbeat from now on (gunicorn.conf.py's
    post_worker_init: not an app a test builds in its own process), with its spool's dead
    letters when it has a spool."""
    svc: Services = app.extensions["answerback"]
    spool = svc.spool

    def gauges() -> dict[str, Any]:
        return {} if spool is None else {"dead_letters": spool.dead_letters(), "spool": str(spool.directory)}

    start_heartbeat(svc.redis, WEB, svc.settings, gauges)
