"""The client API: submit requests, read or wait for their results, list them."""

from __future__ import annotations

import time
from urllib.parse import quote

import gevent
from flask import Blueprint, Response, g, jsonify, request, url_for
from redis.exceptions import RedisError
from werkzeug.wrappers import Request

import logs
from notify_hosts import NotAllowed
from receiver.auth import identity_of, require_key
from receiver.errors import BadRequest, Conflict, NotFound, Unprocessable, UnsupportedMediaType
from receiver.json_provider import compact_json
from receiver.services import Services, services
from receiver.validation import (
    LIST_ARGS,
    MAX_IDEMPOTENCY_KEY,
    PAGE_SIZE,
    WAIT_ARGS,
    int_arg,
    is_uuid,
    json_body,
    known_args,
    list_filter,
    page_meta,
    parse_bulk_retry,
    parse_submission,
    q_arg,
    wait_arg,
)
from store.metrics import count
from store.records import RequestRecord, Requests, Submission
from store.retries import MAX_BULK

PREFIX = "/v1"
SUBMIT_PATH = PREFIX + "/requests"
bp = Blueprint("requests", __name__, url_prefix=PREFIX)


@bp.post("/requests")
def submit() -> Response:
    """Served by receiver/front.py before Flask's dispatch; Flask gets a submission only at a
    variant of the URL its map takes as the same (e.g. a doubled slash)."""
    status, body, headers = serve_submission(services(), request)
    return Response(body, status=int(status[:3]), headers=headers)


def serve_submission(svc: Services, req: Request) -> tuple[str, bytes, list[tuple[str, str]]]:
    """A submission's answer: 202 and the new (or, with a known Idempotency-Key, the first) record."""
    tenant = identity_of(svc, req.headers.get("Authorization", ""))
    if not req.is_json:
        raise UnsupportedMediaType("request body must be application/json")
    form = parse_submission(json_body(req))
    timeout = form.callback_timeout or svc.settings.callback_timeout
    if timeout > svc.settings.max_callback_timeout:
        raise BadRequest(f"callback_timeout must be at most {svc.settings.max_callback_timeout}")
    idem = req.headers.get("Idempotency-Key")
    if idem is not None and not 1 <= len(idem) <= MAX_IDEMPOTENCY_KEY:
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    notify_host = _notify_host(svc, form.notify_url)
    submitted = svc.requests.submit(
        Submission(
            tenant=tenant.id,
            aliases=tenant.aliases,
            method=form.method,
            path=form.path,
            params=form.params,
            callback_method=form.callback_method or svc.settings.callback_method,
            callback_timeout=timeout,
            idempotency_key=idem,
            notify_url=form.notify_url or "",
            notify_host=notify_host,
        )
    )
    rid = submitted.record.fields["request_id"]
    logs.bind(request_id=rid)
    if submitted.conflict:
        raise Unprocessable("Idempotency-Key was already used with a different request")
    svc.ring(submitted.ring_id)
    body = (compact_json(submitted.record.to_json()) + "\n").encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Location", f"{quote(req.script_root)}{SUBMIT_PATH}/{rid}"),
    ]  # as url_for writes it
    if not submitted.created:
        headers.append(("Idempotent-Replayed", "true"))
    return "202 ACCEPTED", body, headers


@bp.get("/requests/<request_id>")
@require_key
def get_request(request_id: str) -> Response:
    known_args(request.args, WAIT_ARGS)
    wait = wait_arg(request.args)
    return _answer(request_id, wait)


@bp.get("/results/<api_id>")
@require_key
def get_result(api_id: str) -> Response:
    known_args(request.args, WAIT_ARGS)
    wait = wait_arg(request.args)
    logs.bind(api_id=api_id if is_uuid(api_id) else "")
    svc = services()
    records = svc.waiter_requests if wait else svc.requests
    rid = records.rid_for_api_id(api_id.lower()) if is_uuid(api_id) else None
    if rid is None:
        raise NotFound("no request with that api_id")
    return _answer(rid, wait)


@bp.get("/requests/<request_id>/deliveries")
@require_key
def get_deliveries(request_id: str) -> Response:
    _own_record(request_id)
    return jsonify(objects=services().requests.deliveries(request_id))


@bp.get("/requests/<request_id>/notifications")
@require_key
def get_notifications(request_id: str) -> Response:
    _own_record(request_id)
    return jsonify(objects=services().notifications.attempts(request_id))


@bp.post("/requests/<request_id>/notify")
@require_key
def notify_again(request_id: str) -> Response:
    _own_record(request_id)
    outcome = services().notifications.again(request_id)
    if outcome == "no_url":
        raise Conflict("this request has no notify_url")
    if outcome == "not_finished":
        raise Conflict("this request is not finished yet; its notification is sent when it is")
    response = jsonify(_own_record(request_id).to_json())
    response.status_code = 202
    return response


def _notify_host(svc: Services, url: str | None) -> str:
    """The host:port a notify_url goes to, if NOTIFY_HOSTS allows it (else 422: never contacted)."""
    if url is None:
        return ""
    try:
        return svc.notify_hosts.check_url(url).authority
    except NotAllowed as exc:
        raise Unprocessable(str(exc), fields={"notify_url": str(exc)}) from None


@bp.get("/requests")
@require_key
def list_requests() -> Response:
    """Newest first, narrowed by the filters given (AND); `q` is one exact request id, api_id or
    Idempotency-Key."""
    known_args(request.args, LIST_ARGS)
    limit = int_arg(request.args, "limit", PAGE_SIZE, 1, PAGE_SIZE)
    offset = int_arg(request.args, "offset", 0, 0)
    filt, q = list_filter(request.args), q_arg(request.args)
    requests = services().requests
    if q is not None:
        total, records = requests.find(g.tenant, g.tenant_aliases, q, filt, offset, limit)
    else:
        total, records = requests.page(g.tenant, filt, offset, limit)
    kept = {name: request.args.get(name) for name in ("q", "status", "path", "since", "until")}
    return jsonify(
        meta=page_meta("requests.list_requests", limit, offset, total, **kept),
        objects=[r.to_json() for r in records],
    )


@bp.post("/requests/<request_id>/retry")
@require_key
def retry(request_id: str) -> Response:
    """A failed or expired request submitted again as a new one, at most once."""
    known_args(request.args, ())
    svc = services()
    old = _own_record(request_id)
    # The new request is filed as the old one is (under an alias until store/tenants.py moves both).
    retried = svc.retries.retry(old.fields["request_id"], old.tenant)
    if retried.outcome == "gone":  # purged meanwhile
        raise NotFound("no request with that id")
    if retried.outcome == "retried":
        raise Conflict("this request was already retried", retried_as=retried.value)
    if retried.outcome == "status":
        raise Conflict("only a failed or expired request can be retried", status=retried.value)
    svc.ring(retried.ring_id)
    record = svc.requests.get(retried.value)
    assert record is not None  # just created, kept result_ttl
    response = jsonify(record.to_json())
    response.status_code = 202
    response.headers["Location"] = f"{quote(request.script_root)}{SUBMIT_PATH}/{retried.value}"
    return response


@bp.post("/requests/retry")
@require_key
def retry_matching() -> Response:
    """Every failed or expired request of the tenant the filter matches, retried by the workers'
    sweep (resumable); at most MAX_BULK per call. `preview`: only their count. Its filters are in
    the body: a query parameter (e.g. `?preview=true`) is refused, not ignored into a retry."""
    known_args(request.args, ())
    if not request.is_json:
        raise UnsupportedMediaType("request body must be application/json")
    filt, preview = parse_bulk_retry(json_body(request))
    retries = services().retries
    total, rids = retries.matching(g.tenant, filt)
    if preview:
        return jsonify(count=total)
    if total > MAX_BULK:
        raise Unprocessable(
            f"{total} requests match; a bulk retry takes at most {MAX_BULK}: narrow the filter",
            count=total,
            max=MAX_BULK,
        )
    bulk_id = retries.start(g.tenant, rids)
    response = jsonify(bulk_id=bulk_id, count=len(rids))
    response.status_code = 202
    response.headers["Location"] = url_for("requests.retry_progress", bulk_id=bulk_id)
    return response


@bp.get("/requests/retry/<bulk_id>")
@require_key
def retry_progress(bulk_id: str) -> Response:
    owners = (g.tenant, *g.tenant_aliases)
    progress = services().retries.progress(bulk_id.lower(), owners) if is_uuid(bulk_id) else None
    if progress is None:
        raise NotFound("no bulk retry with that id")
    return jsonify(progress)


def _own_record(rid: str, requests: Requests | None = None) -> RequestRecord:
    requests = requests or services().requests
    record = requests.get_for(g.tenant, rid, g.tenant_aliases) if is_uuid(rid) else None
    if record is None:
        raise NotFound("no request with that id")
    logs.bind(request_id=rid, api_id=record.fields.get("api_id") or "")
    return record


def _answer(rid: str, wait: int) -> Response:
    if not wait:
        return jsonify(_own_record(rid).to_json())
    waiting = services().waiter_requests  # a waiter reads through connections of its own
    record = _own_record(rid, waiting)
    if record.finished:
        return jsonify(record.to_json())
    record, capped = _wait(record, wait, waiting)
    response = jsonify(record.to_json())
    if capped:
        response.headers["X-Wait-Capped"] = "true"
    return response


def _wait(record: RequestRecord, seconds: int, waiting: Requests) -> tuple[RequestRecord, bool]:
    """Hold the answer until the request finishes or `seconds` pass, within this process's and
    this tenant's cap (else answered at once, capped). The listener wakes the wait when the
    request finishes, after a Redis reconnect, and when the process stops; the web worker
    sheds it when connections run short (then, as when capped, the record is answered as it
    stands)."""
    svc, rid = services(), record.fields["request_id"]
    with svc.waiters.taken(g.tenant, gevent.getcurrent()) as waiter:
        if waiter is None:
            count(waiting.redis, "waits_capped")
            return record, True
        count(waiting.redis, "waits_held")
        deadline = time.monotonic() + seconds
        with svc.listener.watching(rid) as done:
            waiter.event = done
            record = _own_record(rid, waiting)
            while (
                not (record.finished or svc.listener.released or waiter.shed)
                and (left := deadline - time.monotonic()) > 0
            ):
                done.wait(left)
                done.clear()
                try:
                    record = _own_record(rid, waiting)
                except RedisError:  # away for a moment (a failover): wait on, read again
                    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                    done.set()
        if waiter.shed:
            count(waiting.redis, "waits_shed")
        return record, waiter.shed
