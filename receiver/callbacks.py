"""The webhook Plivo calls: verify, store durably, match, answer fast.

It is served by receiver/front.py before Flask's dispatch (`serve`); its errors are the
same JSON answers as every view's.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from functools import cache
from io import BytesIO
from typing import Any, NoReturn, cast
from urllib.parse import parse_qsl

from flask import Blueprint
from redis.exceptions import RedisError
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge
from werkzeug.wrappers import Request

import logs
from config import shown_url
from receiver.errors import ApiError, BadRequest, InvalidSignature, UriTooLong
from receiver.prometheus import RID_ENVIRON, TENANT_ENVIRON, timed_webhook
from receiver.services import Services
from receiver.signature import verify_v2, verify_v3
from receiver.validation import is_uuid, json_body
from store.connection import OUTAGE, now_ms, within
from store.deliveries import SPOOLED, Matched
from store.scripts import NotReplicated

log = logging.getLogger(__name__)

bp = Blueprint("callbacks", __name__)

PATH = "/callbacks/plivo"
METHODS = ("GET", "POST")
SERVED = (*METHODS, "HEAD")  # HEAD is refused here (405), and timed as the webhook's like any refusal
RID_PARAM = "rid"
# A GET callback carries its fields in the query string: up to MAX_BODY_BYTES of them, besides
# what the callback URL Answerback handed out carries itself (rid=...).
URL_ALLOWANCE = 1024


@bp.route(PATH, methods=list(METHODS))
def plivo() -> NoReturn:
    """Flask's rule for the webhook's URL, so that Flask answers the methods the webhook does
    not serve as on any route (OPTIONS; 405 with Allow). GET, POST and HEAD never get here:
    receiver/front.py takes them before Flask."""
    raise MethodNotAllowed(valid_methods=list(METHODS))


def serve(svc: Services, request: Request) -> tuple[str, bytes, tuple[tuple[str, str], ...]]:
    """The webhook's answer (receiver/front.py serves it before Flask): 200 and the outcome."""
    return ("200 OK", *_answer(receive(svc, request)))


@timed_webhook
def receive(svc: Services, request: Request) -> str:
    """Keep one delivery; answers its outcome. One refused for a reason our own settings may
    cause is kept in the quarantine before the refusal is answered."""
    if request.method == "HEAD":  # a HEAD must change nothing
        raise MethodNotAllowed(valid_methods=list(METHODS))
    if len(request.query_string) > svc.settings.max_body_bytes + URL_ALLOWANCE:
        log.warning(
            "callback query string of %d bytes refused: MAX_BODY_BYTES is %d",
            len(request.query_string),
            svc.settings.max_body_bytes,
        )
        _count_oversized(svc, request)
        raise UriTooLong(f"callback query string is larger than {svc.settings.max_body_bytes} bytes")
    request.environ[RID_ENVIRON] = _rid(request)  # for its latency's tenant (receiver/prometheus.py) and check()
    try:
        delivery = check(svc, request)
    except Refused as refused:
        _quarantine(svc, request, refused.reason)
        raise refused.error from None
    except RequestEntityTooLarge:  # answered 413 (and logged with its size) by error_answer
        _count_oversized(svc, request)
        raise
    outcome, request.environ[TENANT_ENVIRON] = keep(svc, delivery)
    return outcome


def _count_oversized(svc: Services, request: Request) -> None:
    """Larger than the contract allows: not kept (so not quarantined), but counted among the
    refused callbacks; with Redis away the refusal stands uncounted."""
    try:
        svc.deliveries.refused("oversized", _rid(request))
    except RedisError:
        pass


REFUSAL_REASONS = ("signature", "body", "api_id")  # what a quarantined callback was refused for


class Refused(Exception):
    """A check refused a callback for `reason` (signature, body, api_id), a refusal our own
    settings may cause; `error` is the answer to its sender."""

    def __init__(self, reason: str, error: ApiError) -> None:
        super().__init__(reason)
        self.reason, self.error = reason, error


def check(svc: Services, request: Request) -> dict[str, Any]:
    """The delivery a callback carries, verified with the current settings; raises Refused.
    The webhook and the quarantine's re-check (receiver/quarantine.py) both go through it."""
    try:
        body, signed_params = _read_delivery(request)
    except BadRequest as exc:
        raise Refused("body", exc) from None
    nonce = _check_signature(svc, request, signed_params)
    rid = request.environ[RID_ENVIRON] if RID_ENVIRON in request.environ else _rid(request)
    if request.method == "GET":
        body.pop(RID_PARAM, None)
    try:
        api_id = _api_id(body)
    except BadRequest as exc:
        logs.bind(request_id=rid)
        raise Refused("api_id", exc) from None
    logs.bind(request_id=rid, api_id=api_id)
    return dict(rid=rid, api_id=api_id, body=body, method=request.method, nonce=nonce, received_at=now_ms())


def _rid(request: Request) -> str:
    """The request id the callback URL carries ("" when none, or not a UUID): the first `rid`
    of the query, decoded as `request.args` decodes it, without building the MultiDict of every
    argument that `request.args` is (a POST callback's query has nothing else to read)."""
    for name, value in parse_qsl(request.query_string.decode(), keep_blank_values=True, errors="replace"):
        if name == RID_PARAM:
            return value if is_uuid(value) else ""
    return ""


@cache
def _answer(outcome: str) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """The answer to a stored delivery (body, headers), built once per outcome (the hot path)."""
    body = json.dumps({"outcome": outcome}).encode()
    return body, (("Content-Type", "application/json"), ("Content-Length", str(len(body))))


def keep(svc: Services, delivery: dict[str, Any]) -> Matched:
    """Store a delivery in Redis, holding on through an outage or a failover for up to
    CALLBACK_HOLD (Plivo never retries after a 503); past that, keep it in the spool (its
    tenant then unknown: None). Raises the Redis error (503) when neither could keep it."""
    written: list[str] = []

    def attempt() -> Matched:
        try:
            matched = svc.deliveries.match(**delivery)
        except NotReplicated as exc:  # stored, not yet replicated: the next try says "duplicate"
            written.append(cast(str, exc.result))  # the outcome, as match() answers it
            raise
        return Matched(written[0], matched.tenant) if written and matched.outcome == "duplicate" else matched

    try:
        return within(svc.settings.callback_hold, attempt)
    except OUTAGE as outage:
        if svc.spool is None:
            raise
        svc.start_spool_replayer()
        try:
            svc.spool.append(delivery)
        except OSError as exc:
            log.error("callback could not be spooled either (%s)", exc.strerror or type(exc).__name__)
            raise outage from None
        log.warning("Redis unavailable for %s s: callback spooled", svc.settings.callback_hold)
        return Matched(SPOOLED, None)


def _read_delivery(req: Request) -> tuple[dict[str, Any], dict[str, Any]]:
    """The delivered fields, and the parameters the signature covers besides the URL."""
    if req.method == "GET":
        return _flatten(req.args.to_dict(flat=False)), {}
    if req.mimetype == "application/json":
        data = json_body(req)
        if not isinstance(data, dict):
            raise BadRequest("callback body is not a JSON object")
        return dict(data), data
    if req.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        data = req.get_data(cache=True)  # read once, kept as received should it be quarantined
        _, parsed, _ = req.make_form_data_parser().parse(BytesIO(data), req.mimetype, len(data), req.mimetype_params)
        form = parsed.to_dict(flat=False)
        return _flatten(form), form
    if not req.get_data(cache=True):
        return {}, {}
    raise BadRequest("callback body must be JSON or form-encoded")


def _flatten(multi: dict[str, list[str]]) -> dict[str, Any]:
    return {k: v[0] if len(v) == 1 else v for k, v in multi.items()}


def _api_id(body: dict[str, Any]) -> str:
    value = body.get("api_id")
    if not isinstance(value, str) or not value:
        raise BadRequest("callback has no api_id")
    if not is_uuid(value):
        raise BadRequest("callback api_id is not a UUID (8-4-4-4-12 hex digits)")
    return value.lower()


def _check_signature(svc: Services, req: Request, params: dict[str, Any]) -> str:
    """Refuse what Plivo did not sign; answer the nonce of what it did ("" when unchecked)."""
    settings = svc.settings
    if not settings.verify_signatures:
        return ""
    url = checked_url(svc, req)
    if req.query_string:
        url += "?" + req.query_string.decode("utf-8", "replace")
    nonce = req.headers.get("X-Plivo-Signature-V3-Nonce", "")
    main_token = settings.plivo_main_auth_token or settings.plivo_auth_token
    for header, token in (("X-Plivo-Signature-V3", settings.plivo_auth_token), ("X-Plivo-Signature-Ma-V3", main_token)):
        signatures = req.headers.get(header, "")
        if signatures and verify_v3(token, req.method, url, nonce, signatures, params):
            return "v3:" + nonce
    if settings.accept_v2_signatures and _v2_signed(req, settings.plivo_auth_token, main_token, checked_url(svc, req)):
        return "v2:" + req.headers.get("X-Plivo-Signature-V2-Nonce", "")
    raise Refused("signature", InvalidSignature("callback signature is missing or invalid"))


def _v2_signed(req: Request, token: str, main_token: str, url: str) -> bool:
    nonce = req.headers.get("X-Plivo-Signature-V2-Nonce", "")
    return verify_v2(token, url, nonce, req.headers.get("X-Plivo-Signature-V2", "")) or verify_v2(
        main_token, url, nonce, req.headers.get("X-Plivo-Signature-Ma-V2", "")
    )


def checked_url(svc: Services, req: Request) -> str:
    """The URL, without its query, that a callback's signature is checked against."""
    return svc.settings.public_url + req.path


# Headers a quarantined callback keeps: those its check reads, and those that tell an operator
# which URL its sender called (the signature ones are never shown: receiver/quarantine.py).
KEPT_HEADERS = (
    "Content-Type",
    "X-Plivo-Signature-V3",
    "X-Plivo-Signature-V3-Nonce",
    "X-Plivo-Signature-Ma-V3",
    "X-Plivo-Signature-V2",
    "X-Plivo-Signature-V2-Nonce",
    "X-Plivo-Signature-Ma-V2",
    "Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "User-Agent",
)
REFUSAL_LOG_EVERY_S = 10.0
_refusals_logged: dict[str, tuple[float, int]] = {}  # reason -> (when last logged, refusals since not logged)
_refusals_lock = threading.Lock()


def _quarantine(svc: Services, req: Request, reason: str) -> None:
    """Keep a refused callback whole (request line, the headers it needs, body) in the
    quarantine, in one round trip; with Redis away it is not kept and the refusal stands."""
    rid, url, body = _rid(req), shown_url(checked_url(svc, req)), req.get_data(cache=True)
    description = {
        "reason": reason,
        "rid": rid,
        "method": req.method,
        "path": req.environ.get("PATH_INFO", ""),
        "query": req.environ.get("QUERY_STRING", ""),
        "headers": {name: req.headers[name] for name in KEPT_HEADERS if name in req.headers},
        "checked_url": url,
        "size": len(body) + len(req.query_string),
    }
    try:
        kept = svc.quarantine.keep(description, body, _signature_of(svc, reason))
        outcome = "kept in the quarantine" if kept else "too large to keep"
    except RedisError as exc:  # still the refusal, not a 503 that would tell a forger it was the outage
        outcome = f"not kept: Redis unavailable ({type(exc).__name__})"
    _log_refusal(reason, rid, url, req.headers.get("Host", ""), outcome)


def _signature_of(svc: Services, reason: str) -> str:
    """What a refused callback's signature was: the body is read before it is checked, the
    api_id after."""
    if reason == "signature":
        return "invalid"
    if reason == "api_id":
        return "valid" if svc.settings.verify_signatures else "unchecked"
    return ""


def _log_refusal(reason: str, rid: str, url: str, host: str, kept: str) -> None:
    """One WARNING line per reason every REFUSAL_LOG_EVERY_S in this process, saying how many
    were refused meanwhile: a flood of forgeries must not flood the log. Never the signature,
    the token or the body (GET callbacks carry theirs in the query: only the rid is shown)."""
    now = time.monotonic()
    with _refusals_lock:
        last, unlogged = _refusals_logged.get(reason, (-REFUSAL_LOG_EVERY_S, 0))
        if now - last < REFUSAL_LOG_EVERY_S:
            _refusals_logged[reason] = (last, unlogged + 1)
            return
        _refusals_logged[reason] = (now, 0)
    log.warning(
        "callback refused (%s): rid=%s, checked against %s%s (Host: %r); %s%s",
        reason,
        rid or "none",
        url,
        f"?{RID_PARAM}={rid}" if rid else "",
        host,
        kept,
        f"; {unlogged} more refused for this reason in the last {REFUSAL_LOG_EVERY_S:.0f} s" if unlogged else "",
    )
