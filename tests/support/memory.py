"""The memory side of a test run: the cap `manage.py test` puts on every process, a way to
start a program without it, and the run's high-water marks in the terminal summary.
Registered as a pytest plugin by tests/conftest.py."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from local.processes import Service

SERVICES: list[Service] = []  # every child service started, for the memory summary
WORKER_PEAKS: list[dict[str, int]] = []  # under pytest-xdist: what each test process reported


def track(service: Service) -> Service:
    """Count `service` in the run's memory summary."""
    SERVICES.append(service)
    return service


def memory_cap() -> int | None:
    """The address-space cap (bytes) every process of the run has: `manage.py test` sets it."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


@contextmanager
def without_memory_cap() -> Iterator[None]:
    """For starting a program that reserves far more address space than it uses (a browser's
    JavaScript engine does): children started inside inherit no cap. Only the soft limit is
    set by manage.py, so it can be lifted and put back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def pytest_report_header() -> str:
    cap = memory_cap()
    return (
        "memory cap: none (run the suite with `python3 manage.py test` to get one)"
        if cap is None
        else f"memory cap: {cap >> 20} MiB of address space per process (TEST_MEMORY_LIMIT)"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(MemoryError) and memory_cap():
        report.sections.append(
            (
                "memory cap",
                f"{item.nodeid} hit the cap of {memory_cap() >> 20} MiB of address "
                "space per process (TEST_MEMORY_LIMIT, set by manage.py test)",
            )
        )
    return report


def memory_peaks() -> dict[str, int]:
    """This test process's resident high-water mark and its children's, by kind, in MB."""
    peaks = {"pytest": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10}
    for service in SERVICES:
        kind = service.name.split("-")[0]
        peaks[kind] = max(peaks.get(kind, 0), service.peak_rss_kb >> 10)
    return peaks


def pytest_sessionfinish(session) -> None:
    if hasattr(session.config, "workeroutput"):  # an xdist test process: report to the controller
        session.config.workeroutput["memory_peaks"] = memory_peaks()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    WORKER_PEAKS.append(getattr(node, "workeroutput", {}).get("memory_peaks", {}))


def pytest_terminal_summary(terminalreporter) -> None:
    """The memory high-water mark of the run, so that growth shows before it kills a run
    (under pytest-xdist: the largest of any test process and of any child by kind)."""
    peaks: dict[str, int] = {}
    for reported in WORKER_PEAKS or [memory_peaks()]:
        for kind, mb in reported.items():
            peaks[kind] = max(peaks.get(kind, 0), mb)
    own = peaks.pop("pytest", 0)
    children = ", ".join(f"{kind} {mb} MB" for kind, mb in sorted(peaks.items()))
    processes = f" (largest of {len(WORKER_PEAKS)} test processes)" if WORKER_PEAKS else ""
    terminalreporter.write_sep("-", "memory high-water mark (resident)")
    terminalreporter.write_line(f"pytest {own} MB{processes}; largest child process by kind: {children or 'none'}")
