"""receiver/spool.py: a spool file is replayed only by the process that holds it —
its writer while that lives, anyone once the writer is gone — and then deleted; its
writer keeps appending to it while replays fail; an entry that fails for another reason
than an outage goes to the dead letters, and the others are replayed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from local.processes import ROOT
from receiver.spool import DEAD_LETTERS, Spool

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
    script = (
        f"from receiver.spool import Spool; s = Spool({str(tmp_path)!r}); "
        f"[s.append({{'api_id': f'api-{{n}}'}}) for n in range(2)]; "
        'f = s._held[s._writing].fd; import os; os.write(f, b\'{"api_id": "cut sh\')'
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)
    first, second = Spool(tmp_path), Spool(tmp_path)
    seen: list[dict] = []
    assert first.replay(seen.append) == 2 and [e["api_id"] for e in seen] == ["api-0", "api-1"]
    assert second.replay(seen.append) == 0 and not any(tmp_path.iterdir())


def test_appends_during_a_replay_are_replayed_in_the_same_round(tmp_path):
    spool = Spool(tmp_path)
    spool.append(entry(1))
    seen: list[dict] = []

    def apply_and_append(item: dict) -> str:
        seen.append(item)
        if len(seen) == 1:
            spool.append(entry(2))  # a callback spooled while the replay runs
        return "matched"

    assert spool.replay(apply_and_append) == 2 and [e["api_id"] for e in seen] == ["api-1", "api-2"]
    assert spool.entries() == 0 and not any(tmp_path.iterdir())


def outage(_: dict) -> str:
    raise RedisConnectionError("Redis is away")


def test_failed_replays_keep_appending_to_one_file_and_resume_where_they_stopped(tmp_path):
    spool = Spool(tmp_path)
    for n in range(50):
        spool.append(entry(n))
        try:
            spool.replay(outage)
        except RedisConnectionError:
            pass
        else:
            raise AssertionError("an outage must stop the replay")
    assert len(list(tmp_path.iterdir())) == 1 and spool.entries() == 50
    seen: list[dict] = []

    def until_the_tenth(item: dict) -> str:
        if len(seen) == 10:
            raise RedisConnectionError("away again")
        seen.append(item)
        return "early"

    try:
        spool.replay(until_the_tenth)
    except RedisConnectionError:
        pass
    assert spool.entries() == 40
    assert spool.replay(seen.append) == 40
    assert [e["api_id"] for e in seen] == [f"api-{n}" for n in range(50)]  # each once, in order
    assert spool.entries() == 0 and not any(tmp_path.iterdir())


def test_an_entry_that_fails_is_kept_aside_and_the_rest_replayed(tmp_path):
    spool = Spool(tmp_path)
    for n in range(5):
        spool.append(entry(n))
    seen: list[dict] = []

    def refuse_the_third(item: dict) -> str:
        if item["api_id"] == "api-2":
            raise TypeError("bad entry")
        seen.append(item)
        return "matched"

    assert spool.replay(refuse_the_third) == 4
    assert [e["api_id"] for e in seen] == ["api-0", "api-1", "api-3", "api-4"]
    assert spool.entries() == 0 and spool.dead_letters() == 1
    assert [p.name for p in tmp_path.iterdir()] == [DEAD_LETTERS]
    dead = json.loads((tmp_path / DEAD_LETTERS).read_text())
    assert dead["error"] == "TypeError: bad entry" and json.loads(dead["entry"]) == entry(2)
    (tmp_path / DEAD_LETTERS).write_text("")  # looked at and emptied by a person
    assert spool.dead_letters() == 0


def test_entries_are_counted_across_processes_without_rereading(tmp_path):
    script = (
        f"from receiver.spool import Spool; s = Spool({str(tmp_path)!r}); [s.append({{'api_id': n}}) for n in range(3)]"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)
    gone = next(tmp_path.iterdir())
    mine, other = Spool(tmp_path), Spool(tmp_path)
    mine.append(entry(0))
    assert mine.entries() == 4 and other.entries() == 4
    gone.write_bytes(b"x" * gone.stat().st_size)  # read again from its start, it would count 0
    mine.append(entry(1))
    assert other.entries() == 5 and mine.entries() == 5
