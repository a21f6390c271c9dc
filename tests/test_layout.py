"""What the tree promises a maintainer: which process may import what, a repository that
carries nothing of the machine it was written on, Lua scripts whose arguments have names,
one builder of the process stack, and test modules that share helpers through tests/support/
only."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

from local.processes import ROOT
from store.scripts import NAMES

pytestmark = pytest.mark.fast

# Spelled in pieces so that this file does not name them itself.
MACHINE_PATHS = ["/" + "work/", "/" + "root/", "/" + "home/"]
UNSHIPPED_DOCS = ["PLIVO" + ".md"]


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def test_no_tracked_file_names_a_machine_path_or_a_document_outside_the_repository():
    found = []
    for name in tracked_files():
        path = ROOT / name
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        found += [f"{name}: {needle}" for needle in MACHINE_PATHS + UNSHIPPED_DOCS if needle in text]
    assert found == []


def test_the_web_process_imports_no_worker_code():
    """Web starts drain jobs by their dotted name (store/drain_jobs.py), with a queue alone."""
    probe = (
        "import pkgutil, importlib, sys, receiver\n"
        "for m in pkgutil.iter_modules(receiver.__path__): importlib.import_module('receiver.' + m.name)\n"
        "print(sorted(n for n in sys.modules if n == 'workers' or n.startswith('workers.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names} | {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }


def test_no_test_module_imports_another_or_the_conftest():
    """What tests share lives in tests/support/ (fixtures there are plugins that conftest.py
    registers), so that a test module can be read, moved or deleted on its own."""
    test_module = re.compile(r"(tests\.)?(test_\w+|conftest)$")
    found = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for name in sorted(imported_modules(path))
        if test_module.match(name)
    ]
    assert found == []


NAMED_ARGUMENT_SCRIPTS = sorted(NAMES)  # every script (issue 12)
POSITIONAL = re.compile(r"\b(ARGV|KEYS)\[")


def argument_names(lines: list[str]) -> list[str]:
    """The names the header's `local a, b = ARGV[1], tonumber(ARGV[2])` lines give, in ARGV order."""
    named: dict[int, str] = {}
    for line in lines:
        match = re.match(r"local ([\w, ]+?) = (.*)", line.split("--")[0])
        if match:
            names = [n.strip() for n in match[1].split(",")]
            indexes = [int(i) for i in re.findall(r"ARGV\[(\d+)\]", match[2])]
            if len(names) == len(indexes):
                named |= dict(zip(indexes, names))
    return [named[i] for i in sorted(named)]


@pytest.mark.parametrize("name", NAMED_ARGUMENT_SCRIPTS)
def test_a_lua_script_names_its_arguments_at_its_top_as_its_header_comment_lists_them(name):
    lines = (ROOT / "store" / "lua" / f"{name}.lua").read_text().splitlines()
    top = 0
    while top < len(lines) and (lines[top].startswith("--") or "ARGV" in lines[top] or "KEYS" in lines[top]):
        top += 1
    assert [line for line in lines[top:] if POSITIONAL.search(line)] == []
    header = next(line for line in lines if line.startswith("-- ARGV:"))
    listed = re.sub(r"\(.*?\)|\[.*", "", header.removeprefix("-- ARGV:")).split()
    assert argument_names(lines[:top]) == listed


def test_the_process_stack_is_built_in_one_place():
    """Tests, benches and the local run start web, workers and the sandbox, and give them their
    environment, through local/stack.py only. tests/test_startup.py gives the upstream URL a
    wrong value on purpose (web and workers must refuse it): an override, not a wiring."""
    builders = re.compile(r"\bgunicorn\(|\bpython\(\"-m\", \"workers\"|[\"']PLIVO_API_URL[\"']\s*:|\bPLIVO_API_URL=")
    found = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for folder in ("tests", "bench", "local")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.relative_to(ROOT).as_posix() not in ("local/stack.py", "local/processes.py", "tests/test_startup.py")
        for line in path.read_text().splitlines()
        if builders.search(line)
    ]
    assert found == []


def test_gunicorns_master_imports_neither_store_nor_redis():
    """gunicorn's master reads gunicorn.conf.py, imports the worker class and the logger class
    it names (receiver/web_worker.py, receiver/gunicorn_logger.py) and starts its logger, all
    before a worker monkey-patches threading: a lock made at import there stays a real OS lock
    in every worker, and one such lock hung a whole gevent worker (see store/metrics.py). The
    probe loads the configuration through gunicorn's own application, as the master does."""
    probe = (
        "import sys\n"
        "from gunicorn.app.wsgiapp import WSGIApplication\n"
        "sys.argv = ['gunicorn', '-c', 'gunicorn.conf.py', 'receiver:create_app()']\n"
        "cfg = WSGIApplication().cfg\n"
        "assert cfg.worker_class.__module__ == 'receiver.web_worker', cfg.worker_class\n"
        "cfg.logger_class(cfg)\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'store', 'redis', 'rq', 'flask', 'workers'}))"
    )
    required = {"PUBLIC_URL": "http://127.0.0.1:1", "API_KEYS": "k", "PLIVO_AUTH_TOKEN": "t"}  # else it refuses
    env = {**os.environ, **required}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_test_the_fault_catalogue_names_exists():
    """docs/faults.md points at the test covering each fault: a renamed or removed test must
    not leave the catalogue promising what nothing checks."""
    text = (ROOT / "docs" / "faults.md").read_text()
    named = re.findall(r"`((?:contracts/)?test_\w+\.py)(?:::(\w+))?`", text)
    assert len(named) > 50
    missing = []
    for file, test in named:
        path = ROOT / "tests" / file
        if not path.exists() or (test and not re.search(rf"^(async )?def {test}\(", path.read_text(), re.M)):
            missing.append(f"{file}::{test}" if test else file)
    assert missing == []


def test_every_test_file_is_mapped_to_its_modules_in_the_tests_readme():
    """tests/README.md is where a newcomer finds the test of a module: no test file is left out."""
    mapped = (ROOT / "tests" / "README.md").read_text()
    files = [p for p in (ROOT / "tests").rglob("test_*.py") if "support" not in p.parts]
    assert [p.name for p in files if p.name not in mapped] == []
