"""The `answerback` command, run as a real subprocess (the console script in .venv) against
the real stack: what it prints, and every documented exit code."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from local.processes import BIN
from local.redis_server import free_port
from tests.support.services import KEY_A

CALL = ["from=14155550100", "to=14155550101", "answer_url=https://example.com/answer"]


@pytest.fixture
def answerback(web, worker, tmp_path):
    """Run the CLI from a folder outside the project, configured by the environment."""

    def run(*args: str, key: str | None = KEY_A, timeout: float = 180) -> subprocess.CompletedProcess:
        env = {**os.environ, "ANSWERBACK_URL": web.url}
        env.pop("ANSWERBACK_API_KEY", None)
        if key is not None:
            env["ANSWERBACK_API_KEY"] = key
        return subprocess.run(
            [str(BIN / "answerback"), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout
        )

    return run


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_jsonl(path: Path, items: list) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return str(path)


def message(n: int) -> dict:
    return {
        "method": "POST",
        "path": "Message/",
        "params": {"src": "14155550100", "dst": f"1415555{n:04d}", "text": "hi"},
    }


def test_submit_wait_prints_the_completed_record_and_exits_0(answerback):
    done = answerback("submit", "POST", "Call/", *CALL, "--wait", "30")
    assert done.returncode == 0, done.stderr
    fields = dict(line.split(None, 1) for line in done.stdout.splitlines()[:4])
    assert fields["status"] == "completed" and fields["request"] == "POST Call/"
    assert '"message": "call fired"' in done.stdout and fields["api_id"] in done.stdout.split("response", 1)[1]


def test_submit_without_wait_exits_0_and_sends_typed_params(answerback, sandbox):
    accepted = answerback(
        "submit",
        "post",
        "Call/",
        *CALL,
        "time_limit:=60",
        "machine_detection:=true",
        "--json",
        "--callback-method",
        "get",
    )
    assert accepted.returncode == 0, accepted.stderr
    record = json.loads(accepted.stdout)
    assert record["status"] == "queued" and record["method"] == "POST" and record["callback_method"] == "GET"
    done = json.loads(answerback("get", record["request_id"], "--wait", "30", "--json").stdout)
    assert done["status"] == "completed"
    [sent] = [r for r in sandbox.requests() if r["rid"] == record["request_id"]]
    assert sent["json"]["time_limit"] == 60 and sent["json"]["machine_detection"] is True
    assert sent["json"]["to"] == "14155550101"


def test_an_idempotency_key_makes_a_second_submit_a_replay(answerback, sandbox):
    first, again = (
        json.loads(answerback("submit", "POST", "Call/", *CALL, "--idempotency-key", "cli-1", "--json").stdout)
        for _ in range(2)
    )
    assert first["request_id"] == again["request_id"]
    shown = answerback("submit", "POST", "Call/", *CALL, "--idempotency-key", "cli-1")
    assert shown.returncode == 0 and "replayed" in shown.stdout


def test_failed_and_expired_exit_1(answerback, sandbox):
    sandbox.faults(status_4xx={"rate": 1.0, "error": "to is invalid"})
    failed = answerback("submit", "POST", "Call/", *CALL, "--wait", "30")
    assert failed.returncode == 1 and "failed" in failed.stdout and "to is invalid" in failed.stdout
    sandbox.reset()
    sandbox.faults(drop_callback=1.0)
    expired = answerback("submit", "POST", "Call/", *CALL, "--callback-timeout", "1", "--wait", "30")
    assert expired.returncode == 1 and "expired" in expired.stdout
    rid = expired.stdout.split()[1]
    assert answerback("get", rid).returncode == 1


def test_retry_prints_the_new_request_and_refuses_a_second_retry(answerback, sandbox):
    sandbox.faults(status_4xx={"rate": 1.0, "error": "to is invalid"})
    failed = answerback("submit", "POST", "Call/", *CALL, "--wait", "30")
    assert failed.returncode == 1, failed.stderr
    sandbox.reset()
    rid = failed.stdout.split()[1]
    retried = answerback("retry", rid, "--wait", "30", "--json")
    assert retried.returncode == 0, retried.stderr
    record = json.loads(retried.stdout)
    assert record["retry_of"] == rid and record["status"] == "completed"
    refused = answerback("retry", rid)
    assert refused.returncode == 2 and f"already retried: {record['request_id']}" in refused.stderr
    listed = answerback("ls", "--q", rid, "--json")
    assert [r["request_id"] for r in json_lines(listed.stdout)] == [rid]


def test_a_wait_that_runs_out_exits_4_and_without_wait_pending_is_0(answerback, sandbox):
    sandbox.faults(drop_callback=1.0)
    waited = answerback("submit", "POST", "Call/", *CALL, "--wait", "1", "--json")
    record = json.loads(waited.stdout)
    assert waited.returncode == 4 and record["status"] in ("queued", "sending", "pending")
    assert answerback("get", record["request_id"]).returncode == 0


@pytest.mark.parametrize(
    "args, says",
    [
        ([], "required"),
        (["submit", "POST"], "required"),
        (["submit", "POST", "Call/", "to"], "not KEY=VALUE"),
        (["submit", "POST", "Call/", "n:=notjson"], "needs a JSON value"),
        (["submit", "POST", "Call/", "to=1", "to=2"], "given twice"),
        (["submit", "POST", "Call/", "to=1", "--wait", "soon"], "invalid seconds value"),
        (["submit", "POST", "/Account/x/Call/", "to=1"], "path: must be relative"),
        (["submit", "PUT", "Call/", "to=1"], "method: must be GET, POST or DELETE"),
        (["submit", "POST", "Call/", "to=1", "--notify-url", "https://example.com/hook"], "(HTTP 422)"),
        (["get", "0191a0b4-0000-7000-8000-000000000000"], "no request with that id (HTTP 404)"),
        (["result", "0191a0b4-0000-7000-8000-000000000000", "--wait", "1"], "no request with that api_id"),
        (["ls", "--status", "bogus"], "invalid choice"),
        (["submit-many", "no-such-file.jsonl"], "cannot read no-such-file.jsonl"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_a_message(answerback, args, says):
    refused = answerback(*args)
    assert refused.returncode == 2 and says in refused.stderr and refused.stdout == ""


def test_a_bad_line_in_submit_many_exits_2_before_anything_is_sent(answerback, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [message(0), message(1)])
    with open(path, "a") as f:
        f.write("{not json\n")
    refused = answerback("submit-many", path)
    assert refused.returncode == 2 and "bad.jsonl:3: not JSON" in refused.stderr
    assert json_lines(answerback("ls", "--json").stdout) == []
    write_jsonl(tmp_path / "list.jsonl", [[1, 2]])
    assert answerback("submit-many", str(tmp_path / "list.jsonl")).returncode == 2


def test_a_missing_api_key_exits_2(answerback):
    missing = answerback("ls", key=None)
    assert missing.returncode == 2 and "ANSWERBACK_API_KEY" in missing.stderr


def test_a_refused_key_or_an_unreachable_server_exits_3(answerback):
    refused = answerback("submit", "POST", "Call/", *CALL, key="not-a-key")
    assert refused.returncode == 3 and "HTTP 401" in refused.stderr and "not-a-key" not in refused.stderr
    down = answerback("ls", "--url", f"http://127.0.0.1:{free_port()}", "--retries", "1")
    assert down.returncode == 3 and "cannot reach Answerback" in down.stderr


def test_get_result_deliveries_events_and_ls_show_the_request(answerback):
    record = json.loads(answerback("submit", "POST", "Call/", *CALL, "--wait", "30", "--json").stdout)
    rid, api_id = record["request_id"], record["api_id"]
    shown = answerback("get", rid)
    assert shown.returncode == 0 and api_id in shown.stdout and "completed" in shown.stdout
    assert json.loads(answerback("result", api_id, "--wait", "5", "--json").stdout)["request_id"] == rid
    [delivery] = json_lines(answerback("deliveries", rid, "--json").stdout)
    assert delivery["api_id"] == api_id and delivery["body"]["message"] == "call fired"
    assert api_id in answerback("deliveries", rid).stdout
    timeline = json.loads(answerback("events", rid, "--json").stdout)
    assert timeline["request_id"] == rid and timeline["dropped"] == 0
    assert [e["event"] for e in timeline["events"]] == ["submitted", "sent", "api_id", "callback", "completed"]
    lines = answerback("events", rid).stdout.splitlines()
    assert lines[0].split() == ["at", "event", "details"]
    assert [line.split()[1] for line in lines[1:]] == ["submitted", "sent", "api_id", "callback", "completed"]
    assert f"api_id={api_id}" in lines[3] and "verdict=matched" in lines[4] and "outcome=accepted" in lines[2]
    table = answerback("ls").stdout.splitlines()
    assert table[0].split() == ["request_id", "status", "request", "api_id", "submitted_at", "completed_at"]
    assert table[1].split()[:4] == [rid, "completed", "POST", "Call/"]
    assert [r["request_id"] for r in json_lines(answerback("ls", "--json", "--status", "completed").stdout)] == [rid]
    assert json_lines(answerback("ls", "--json", "--status", "failed").stdout) == []


def test_submit_many_of_200_lines_completes_with_the_right_summary(answerback, tmp_path, sandbox):
    path = write_jsonl(tmp_path / "200.jsonl", [message(n) for n in range(200)])
    run = answerback("submit-many", path, "--concurrency", "8", "--wait", "120")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[:2] == ["200 lines, 200 accepted", "completed  200"]
    assert "failures" not in run.stdout
    assert "submitting" in run.stderr and "waiting" in run.stderr and "200/200" in run.stderr
    listed = json_lines(answerback("ls", "--json", "--limit", "0").stdout)
    assert len(listed) == 200 and {r["status"] for r in listed} == {"completed"}
    assert sandbox.stats()["by_rid"] == {r["request_id"]: 1 for r in listed}


def test_submit_many_lists_each_failure_with_its_error_and_exits_1(answerback, tmp_path):
    items = [message(0), {"method": "POST", "path": "../x"}, message(2), {"method": "GET", "path": "Call/nope/"}]
    path = write_jsonl(tmp_path / "mixed.jsonl", items)
    run = answerback("submit-many", path, "--wait")
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "4 lines, 3 accepted"
    assert {tuple(line.split()) for line in lines[1:4]} == {("completed", "2"), ("refused", "1"), ("failed", "1")}
    assert lines[4] == "failures (2)"
    assert lines[5].startswith("  line 2: refused: invalid submission (HTTP 400) — path:")
    assert lines[6].startswith("  line 4: failed ") and '"status": 404' in lines[6]
    outcomes = json_lines(answerback("submit-many", path, "--json").stdout)
    assert [o["line"] for o in outcomes] == [1, 2, 3, 4] and outcomes[1]["status"] == "refused"


def test_submit_many_without_wait_exits_0_once_every_line_is_accepted(answerback, tmp_path):
    run = answerback("submit-many", write_jsonl(tmp_path / "few.jsonl", [message(n) for n in range(5)]))
    assert run.returncode == 0 and run.stdout.startswith("5 lines, 5 accepted")
    assert "waiting" not in run.stderr


def test_submit_many_to_an_unreachable_server_exits_3_and_says_so(answerback, tmp_path):
    path = write_jsonl(tmp_path / "few.jsonl", [message(n) for n in range(3)])
    run = answerback("submit-many", path, "--url", f"http://127.0.0.1:{free_port()}", "--retries", "0")
    assert run.returncode == 3
    assert run.stdout.splitlines()[:2] == ["3 lines, 0 accepted", "error      3"]
    assert "line 1: error: cannot reach Answerback" in run.stdout
