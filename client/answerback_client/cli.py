"""`answerback`: the client from the command line, for operators and scripts.

Settings come from ANSWERBACK_URL and ANSWERBACK_API_KEY (the key is never an argument, so it
stays out of `ps` and shell history). Exit codes: see EXIT_CODES."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from answerback_client.base import VERSION
from answerback_client.client import Client, Request
from answerback_client.errors import AnswerbackError, Conflict, Unauthorized, Unavailable
from answerback_client.records import STATUSES, Delivery, Event, Record

COMPLETED, FINAL_FAILURE, USAGE, UNREACHABLE, STILL_WAITING = 0, 1, 2, 3, 4
EXIT_CODES = f"""exit codes:
  {COMPLETED}  completed (or accepted, without --wait)
  {FINAL_FAILURE}  failed or expired (submit-many: any line failed, expired or was refused)
  {USAGE}  usage: bad arguments, a request the server refused as invalid, an unknown id
  {UNREACHABLE}  the API key was refused, or Answerback is unavailable (after the retries)
  {STILL_WAITING}  --wait ran out before the request finished"""
PARAMS_HELP = """upstream params: KEY=VALUE sends VALUE as text; KEY:=JSON sends a JSON value
(a number, true/false, null, a list or an object), e.g. time_limit:=60 or to:='["1","2"]'"""
NO_LIMIT = float("inf")
STATUS_STYLE = {"completed": "green", "failed": "red", "expired": "red", "pending": "yellow"}


class UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Console(width=None if sys.stdout.isatty() else 200, highlight=False)
    try:
        client = Client(args.url, timeout=args.timeout, retries=args.retries)
    except ValueError as exc:  # no API key
        return fail(USAGE, str(exc))
    try:
        with client:
            return args.command(client, args, out)
    except UsageError as exc:
        return fail(USAGE, str(exc))
    except AnswerbackError as exc:
        return fail(exit_code_for_error(exc), str(exc))
    except KeyboardInterrupt:
        return 130


def fail(code: int, message: str) -> int:
    print(f"answerback: {message}", file=sys.stderr)
    return code


def exit_code_for_error(exc: AnswerbackError) -> int:
    if isinstance(exc, (Unauthorized, Unavailable)) or (exc.status or 0) >= 500:
        return UNREACHABLE
    return USAGE


def exit_code_for_record(record: Record, waited: bool) -> int:
    if record.status == "completed":
        return COMPLETED
    if record.finished:
        return FINAL_FAILURE
    return STILL_WAITING if waited else COMPLETED


def parse_params(pairs: Iterable[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, is_json, value = split_param(pair)
        if key in params:
            raise UsageError(f"parameter {key!r} given twice")
        try:
            params[key] = json.loads(value) if is_json else value
        except ValueError:
            raise UsageError(f"{key}:= needs a JSON value, not {value!r}") from None
    return params


def split_param(pair: str) -> tuple[str, bool, str]:
    key, sep, value = pair.partition("=")
    is_json = key.endswith(":")
    key = key.removesuffix(":")
    if not sep or not key:
        raise UsageError(f"parameter {pair!r} is not KEY=VALUE or KEY:=JSON")
    return key, is_json, value


# ---- commands -------------------------------------------------------------------------------


def cmd_submit(client: Client, args: argparse.Namespace, out: Console) -> int:
    record = client.submit(
        args.method,
        args.path,
        parse_params(args.params),
        callback_method=args.callback_method,
        callback_timeout=args.callback_timeout,
        notify_url=args.notify_url,
        idempotency_key=args.idempotency_key,
    )
    if args.wait is not None:
        record = record.wait(args.wait)
    return show_record(out, record, args)


def cmd_get(client: Client, args: argparse.Namespace, out: Console) -> int:
    return show_record(out, client.get(args.request_id, wait=args.wait or 0), args)


def cmd_result(client: Client, args: argparse.Namespace, out: Console) -> int:
    return show_record(out, client.result(args.api_id, wait=args.wait or 0), args)


def cmd_deliveries(client: Client, args: argparse.Namespace, out: Console) -> int:
    return show_list(out, client.deliveries(args.request_id), deliveries_table, args)


def cmd_events(client: Client, args: argparse.Namespace, out: Console) -> int:
    timeline = client.events(args.request_id)
    if args.json:
        print(json.dumps(timeline.raw))
        return COMPLETED
    if timeline.dropped:
        out.print(f"({timeline.dropped} older events no longer kept)")
    out.print(events_table(timeline.events))
    return COMPLETED


def cmd_ls(client: Client, args: argparse.Namespace, out: Console) -> int:
    found = client.requests(
        status=args.status, limit=args.limit or None, q=args.q, path=args.path, since=args.since, until=args.until
    )
    return show_list(out, found, requests_table, args)


def cmd_retry(client: Client, args: argparse.Namespace, out: Console) -> int:
    try:
        record = client.retry(args.request_id)
    except Conflict as exc:
        raise UsageError(f"{exc.message}: {exc.retried_as}" if exc.retried_as else str(exc)) from None
    if args.wait is not None:
        record = record.wait(args.wait)
    return show_record(out, record, args)


def cmd_submit_many(client: Client, args: argparse.Namespace, out: Console) -> int:
    items = read_items(args.file)
    with Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as progress:
        outcomes = client.submit_many(
            [item for _, item in items], args.concurrency, on_result=ticker(progress, "submitting", len(items))
        )
        accepted = [o for o in outcomes if isinstance(o, Request)]
        if args.wait is not None:
            limit = None if args.wait == NO_LIMIT else args.wait
            finals = iter(
                client.wait_many(
                    accepted, limit, args.concurrency, on_result=ticker(progress, "waiting", len(accepted))
                )
            )
            outcomes = [next(finals) if isinstance(o, Request) else o for o in outcomes]
    lines = [line for line, _ in items]
    if args.json:
        print_json_lines(outcome_json(line, o) for line, o in zip(lines, outcomes))
    else:
        show_summary(out, lines, outcomes, len(accepted))
    return exit_code_for_batch(outcomes, waited=args.wait is not None)


def read_items(path: str) -> list[tuple[int, dict[str, Any]]]:
    """Every line of a JSON-lines file, checked before anything is sent; blank lines skipped."""
    try:
        with sys.stdin if path == "-" else open(path, encoding="utf-8") as lines:
            numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    items = []
    for number, line in numbered:
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(item, dict):
            raise UsageError(f"{path}:{number}: each line must be a JSON object (a submission body)")
        items.append((number, item))
    return items


def ticker(progress: Progress, description: str, total: int) -> Callable[[Any], None]:
    task = progress.add_task(description, total=total)
    return lambda _outcome: progress.advance(task)


def exit_code_for_batch(outcomes: list[Request | AnswerbackError], waited: bool) -> int:
    errors = [o for o in outcomes if isinstance(o, AnswerbackError)]
    codes = {exit_code_for_error(e) for e in errors} | {
        exit_code_for_record(o, waited) for o in outcomes if isinstance(o, Record)
    }
    if UNREACHABLE in codes:
        return UNREACHABLE
    if errors or FINAL_FAILURE in codes:
        return FINAL_FAILURE
    return STILL_WAITING if STILL_WAITING in codes else COMPLETED


# ---- output ---------------------------------------------------------------------------------


def show_record(out: Console, record: Record, args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(record.raw))
    else:
        for line in record_lines(record):
            out.print(line)
        for name in ("response", "error"):
            if getattr(record, name) is not None:
                out.print(f"[bold]{name}[/bold]")
                out.print_json(data=getattr(record, name))
    return exit_code_for_record(record, waited=bool(getattr(args, "wait", None)))


def show_list(
    out: Console, objects: Iterable[Record | Delivery], table: Callable[[Any], Table], args: argparse.Namespace
) -> int:
    if args.json:
        print_json_lines(o.raw for o in objects)
    else:
        out.print(table(objects))
    return COMPLETED


def record_lines(record: Record) -> list[str]:
    rows = [
        ("request_id", record.request_id),
        ("status", styled_status(record.status)),
        ("request", f"{record.method} {record.path}"),
        ("api_id", record.api_id),
        ("submitted_at", record.submitted_at),
        ("sent_at", record.sent_at),
        ("completed_at", record.completed_at),
        ("deadline", record.deadline),
        ("attempts", record.attempts),
        ("deliveries", record.deliveries),
        ("late", record.late or None),
        ("replayed", record.replayed or None),
    ]
    return [
        f"[bold]{name:<14}[/bold]{short_time(value) if isinstance(value, datetime) else value}"
        for name, value in rows
        if value is not None
    ]


def styled_status(status: str) -> str:
    style = STATUS_STYLE.get(status.strip())
    return f"[{style}]{status}[/{style}]" if style else status


def requests_table(records: Iterable[Record]) -> Table:
    table = Table("request_id", "status", "request", "api_id", "submitted_at", "completed_at", box=None)
    for r in records:
        table.add_row(
            r.request_id,
            styled_status(r.status),
            f"{r.method} {r.path}",
            r.api_id or "",
            short_time(r.submitted_at),
            short_time(r.completed_at),
        )
    return table


def deliveries_table(deliveries: Iterable[Delivery]) -> Table:
    table = Table("received_at", "method", "api_id", "body", box=None)
    for d in deliveries:
        table.add_row(short_time(d.received_at), d.method, d.api_id, json.dumps(d.body))
    return table


def events_table(events: Iterable[Event]) -> Table:
    table = Table("at", "event", "details", box=None)
    for e in events:
        details = " ".join(f"{name}={value}" for name, value in e.raw.items() if name not in ("at", "event"))
        table.add_row(short_time(e.at), styled_status(e.event), Text(details))  # details are not markup
    return table


def short_time(moment: datetime | None) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else ""


def show_summary(out: Console, lines: list[int], outcomes: list[Request | AnswerbackError], accepted: int) -> None:
    counts = Counter(outcome_label(o) for o in outcomes)
    out.print(f"{len(outcomes)} lines, {accepted} accepted")
    for status, count in sorted(counts.items(), key=lambda item: -item[1]):
        out.print(styled_status(f"{status:<10}") + f" {count}")
    failures = [
        (line, o)
        for line, o in zip(lines, outcomes)
        if isinstance(o, AnswerbackError) or o.status in ("failed", "expired")
    ]
    if failures:
        out.print(f"[bold]failures ({len(failures)})[/bold]")
    for line, outcome in failures:
        out.print(f"  line {line}: {failure_text(outcome)}", markup=False)


def outcome_label(outcome: Request | AnswerbackError) -> str:
    """A record's status; for an error, `refused` (the server said no) or `error` (no answer, 5xx)."""
    if isinstance(outcome, Record):
        return outcome.status
    unanswered = isinstance(outcome, Unavailable) or (outcome.status or 500) >= 500
    return "error" if unanswered else "refused"


def failure_text(outcome: Request | AnswerbackError) -> str:
    if isinstance(outcome, AnswerbackError):
        return f"{outcome_label(outcome)}: {outcome}"
    return f"{outcome.status} {outcome.request_id}: {json.dumps(outcome.error)}"


def outcome_json(line: int, outcome: Request | AnswerbackError) -> dict[str, Any]:
    if isinstance(outcome, AnswerbackError):
        return {"line": line, "status": outcome_label(outcome), "error": str(outcome), "http_status": outcome.status}
    return {"line": line, **outcome.raw}


def print_json_lines(objects: Iterable[dict[str, Any]]) -> None:
    for obj in objects:
        print(json.dumps(obj))


# ---- arguments ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="Answerback's base URL (default: $ANSWERBACK_URL, else http://127.0.0.1:8000)")
    common.add_argument("--timeout", type=positive_float, default=10.0, help="seconds to connect and per read")
    common.add_argument("--retries", type=int, default=6, help="retries on connection errors and 503 (default 6)")
    common.add_argument("--json", action="store_true", help="JSON (lines) instead of tables")
    top = argparse.ArgumentParser(
        prog="answerback",
        description=__doc__.split("\n\n")[0],
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"answerback-client {VERSION}")
    commands = top.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[..., int], help: str, **extra: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            parents=[common],
            help=help,
            description=help,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **extra,
        )
        sub.set_defaults(command=run)
        return sub

    submit = command("submit", cmd_submit, "submit an upstream request (then wait for it with --wait)")
    submit.add_argument("method", help="GET, POST or DELETE")
    submit.add_argument("path", help="relative to Account/{auth_id}/, e.g. Call/")
    submit.add_argument("params", nargs="*", metavar="KEY=VALUE|KEY:=JSON", help=PARAMS_HELP)
    submit.add_argument("--wait", type=seconds, metavar="N", help="wait up to N seconds for the result")
    submit.add_argument("--idempotency-key", metavar="K", help="a retried submission with K is not sent twice")
    submit.add_argument("--callback-method", choices=["GET", "POST"], type=str.upper)
    submit.add_argument("--callback-timeout", type=int, metavar="S", help="seconds before the request expires")
    submit.add_argument("--notify-url", metavar="URL", help="where Answerback POSTs the record when it finishes")
    for name, run, noun in (("get", cmd_get, "request_id"), ("result", cmd_result, "api_id")):
        sub = command(name, run, f"show a request by its {noun} (waiting with --wait)")
        sub.add_argument(noun)
        sub.add_argument("--wait", type=seconds, metavar="N", help="wait up to N seconds for it to finish")
    deliveries = command("deliveries", cmd_deliveries, "list a request's callback deliveries")
    deliveries.add_argument("request_id")
    events = command("events", cmd_events, "show a request's timeline, oldest first")
    events.add_argument("request_id")
    ls = command("ls", cmd_ls, "list requests, newest first")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--limit", type=int, default=20, metavar="N", help="show at most N (default 20; 0: all)")
    ls.add_argument("--q", metavar="TEXT", help="only the request whose id, api_id or Idempotency-Key is TEXT")
    ls.add_argument("--path", help="only requests to this upstream path, e.g. Message/")
    ls.add_argument("--since", metavar="TIME", help="only requests submitted at or after TIME (ISO 8601)")
    ls.add_argument("--until", metavar="TIME", help="only requests submitted at or before TIME (ISO 8601)")
    retry = command("retry", cmd_retry, "submit a failed or expired request again, as a new request")
    retry.add_argument("request_id")
    retry.add_argument("--wait", type=seconds, metavar="N", help="wait up to N seconds for the new one to finish")
    many = command("submit-many", cmd_submit_many, "submit every line of a JSON-lines file (- for stdin)")
    many.add_argument("file", metavar="FILE.jsonl")
    many.add_argument("--concurrency", type=int, default=8, metavar="N", help="submissions in flight (default 8)")
    many.add_argument(
        "--wait",
        type=seconds,
        nargs="?",
        const=NO_LIMIT,
        metavar="SECONDS",
        help="then wait for every request to finish (up to SECONDS; no value: no limit)",
    )
    return top


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Like `parse_args`, but params may also follow options (`submit POST Call/ --wait 5 to=1`)."""
    top = parser()
    args, rest = top.parse_known_args(argv)
    strays = [a for a in rest if a.startswith("-") or not hasattr(args, "params")]
    if strays:
        top.error(f"unrecognized arguments: {' '.join(strays)}")
    if rest:
        args.params = args.params + rest
    return args


def seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


if __name__ == "__main__":
    sys.exit(main())
