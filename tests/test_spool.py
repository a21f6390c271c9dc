"""receiver/spool.py: a spool file is replayed only by the process that holds it —
its writer while that lives, anyone once the writer is gone — and then deleted."""
from __future__ import annotations

import subprocess
import sys

import pytest

from local.processes import ROOT
from receiver.spool import Spool

pytestmark = pytest.mark.fast


def entry(n: int) -> dict:
    return {"rid": "", "api_id": f"api-{n}", "body": {"n": n}, "method": "POST", "nonce": "", "received_at": n}


def test_a_live_writers_file_is_replayed_by_the_writer_only(tmp_path):
    writer, other = Spool(tmp_path), Spool(tmp_path)
    for n in range(3):
        writer.append(entry(n))
    assert writer.entries() == 3
    seen: list[dict] = []
    assert other.replay(seen.append) == 0 and seen == []
    assert writer.replay(seen.append) == 3 and [e["api_id"] for e in seen] == ["api-0", "api-1", "api-2"]
    assert writer.entries() == 0 and not any(tmp_path.iterdir())


def test_a_gone_writers_file_is_taken_over_once_and_a_torn_tail_is_skipped(tmp_path):
    script = (f"from receiver.spool import Spool; s = Spool({str(tmp_path)!r}); "
              f"[s.append({{'api_id': f'api-{{n}}'}}) for n in range(2)]; "
              "f = s._writing[1]; import os; os.write(f, b'{\"api_id\": \"cut sh')")
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)
    first, second = Spool(tmp_path), Spool(tmp_path)
    seen: list[dict] = []
    assert first.replay(seen.append) == 2 and [e["api_id"] for e in seen] == ["api-0", "api-1"]
    assert second.replay(seen.append) == 0 and not any(tmp_path.iterdir())


def test_appends_after_a_replay_go_to_a_new_file(tmp_path):
    spool = Spool(tmp_path)
    spool.append(entry(1))
    seen: list[dict] = []

    def apply_and_append(item: dict) -> str:
        seen.append(item)
        spool.append(entry(2))   # a callback spooled while the replay runs
        return "matched"
    assert spool.replay(apply_and_append) == 1
    assert spool.entries() == 1
    assert spool.replay(seen.append) == 1 and [e["api_id"] for e in seen] == ["api-1", "api-2"]
