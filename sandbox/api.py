"""The simulated Plivo API under /v1/Account/{auth_id}/: authenticate, maybe misbehave, act, answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Blueprint, Response, request

from sandbox.api_errors import ApiError, BadRequest, Unauthorized, UnsupportedMediaType, reply_response
from sandbox.callback import Callback, CallbackTarget
from sandbox.courier import DeliveryPlan
from sandbox.faults import AFTERMATH, CALLBACK_FAULTS, REFUSALS, Fault, refusal
from sandbox.reply import Reply, new_api_id
from sandbox.resource import ResourcePath
from sandbox.simulator import Simulator, current_simulator
from sandbox.tcp_reset import reset_connection
from sandbox.visit import Visit

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)
METHODS = ["GET", "POST", "DELETE"]


@bp.route("/v1/Account/<auth_id>/", defaults={"resource": ""}, methods=METHODS, strict_slashes=False)
@bp.route("/v1/Account/<auth_id>/<path:resource>", methods=METHODS)
def account_resource(auth_id: str, resource: str) -> Response:
    simulator = current_simulator()
    visit = Visit.from_request(request, simulator.config)
    path = ResourcePath.parse(resource)
    try:
        reply, target = _act(simulator, visit, auth_id, path)
    except ApiError as error:
        simulator.stats.record_request(visit, error.reply.status, error.api_id, acted=False)
        return reply_response(error.reply)
    send_callback = None
    if target is not None:
        reply, send_callback = _asynchronous(simulator, visit, path, reply, target)
    aftermath = _roll(simulator, AFTERMATH, visit, path)
    status = None if "reset_after_receive" in aftermath else reply.status
    simulator.stats.record_request(visit, status, reply.body["api_id"] if reply.body else None, acted=True)
    if send_callback is not None:
        send_callback()
    return _answer(reply, aftermath)


def _act(simulator: Simulator, visit: Visit, auth_id: str, path: ResourcePath) -> tuple[Reply, CallbackTarget | None]:
    """Validate like Plivo, then act; a refused or invalid request changes nothing."""
    if not visit.auth_ok or auth_id != simulator.config.auth_id:
        raise Unauthorized()
    refused = refusal(_roll(simulator, REFUSALS, visit, path, keep=False))
    if refused is not None:
        name, error = refused
        visit.faults.append(name)
        raise error
    args, target = CallbackTarget.split_from(_arguments(visit))
    return simulator.operation.perform(visit.method, path, args), target


def _arguments(visit: Visit) -> dict[str, Any]:
    """POST arguments come as a JSON object (the only input Plivo accepts); others in the query."""
    if visit.method != "POST":
        return visit.query
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    if not isinstance(visit.json, dict):
        raise BadRequest("body must be a JSON object")
    return visit.json


def _asynchronous(
    simulator: Simulator, visit: Visit, path: ResourcePath, reply: Reply, target: CallbackTarget
) -> tuple[Reply, Callable[[], None]]:
    """The immediate answer, and how to send the callback carrying what a synchronous caller would get."""
    body = reply.body or {"api_id": new_api_id(), "message": "deleted"}
    plan = DeliveryPlan.from_faults(_roll(simulator, CALLBACK_FAULTS, visit, path), simulator.config.callback_delay)
    spawned = Reply(200, {"message": "async api spawned", "api_id": body["api_id"]})
    return spawned, partial(simulator.courier.dispatch, Callback(target, body), plan)


def _roll(
    simulator: Simulator, names: tuple[str, ...], visit: Visit, path: ResourcePath, keep: bool = True
) -> dict[str, Fault]:
    fired = simulator.faults.roll(names, visit.method, path.key)
    if keep:
        visit.faults.extend(fired)
    return fired


def _answer(reply: Reply, aftermath: dict[str, Fault]) -> Response:
    """Answer, unless the aftermath faults make the answer late or never come."""
    if "slow_answer" in aftermath:
        time.sleep(aftermath["slow_answer"].draw_seconds())
    if "reset_after_receive" in aftermath:
        if reset_connection(request.environ):
            return Response(status=204)
        log.warning("reset_after_receive needs gunicorn; answering normally")
    return reply_response(reply)
