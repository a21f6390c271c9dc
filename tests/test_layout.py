"""What the tree promises a maintainer: which process may import what, and a repository
that carries nothing of the machine it was written on."""
from __future__ import annotations

import subprocess
import sys

from local.processes import ROOT

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
    probe = ("import pkgutil, importlib, sys, receiver\n"
             "for m in pkgutil.iter_modules(receiver.__path__): importlib.import_module('receiver.' + m.name)\n"
             "print(sorted(n for n in sys.modules if n == 'workers' or n.startswith('workers.')))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
