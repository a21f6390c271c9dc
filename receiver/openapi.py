"""GET /openapi.json: the external contract, as OpenAPI 3.1, and /docs/, a page that reads it.

Generated, never restated: the submission schema comes from the pydantic model, the limits
from receiver/validation.py, the longest callback_timeout from this deployment's settings.
The page is Swagger UI from the flask-swagger-ui wheel: served from here, no CDN.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint, Response, jsonify
from flask_swagger_ui import get_swaggerui_blueprint

from config import CALLBACK_METHODS, Settings
from receiver.callbacks import REFUSAL_REASONS
from receiver.series import GLOBAL_FIGURES, SCOPES
from receiver.services import services
from receiver.validation import (
    MAX_FILTER_TEXT,
    MAX_IDEMPOTENCY_KEY,
    MAX_QUERY_INT,
    MAX_WAIT,
    METHODS,
    PAGE_SIZE,
    PATH_PATTERN,
    BulkRetryIn,
    submission_schema,
)
from store import series
from store.deliveries import OUTCOMES, SPOOLED
from store.events import ORDER as EVENT_NAMES
from store.health import WEB, WORKER
from store.notifications import ATTEMPT_OUTCOMES, NOTIFY_STATUSES
from store.records import STATUSES
from store.retries import MAX_BULK

bp = Blueprint("openapi", __name__)
DOCS_URL = "/docs"
# validatorUrl None: Swagger UI would otherwise send the document to an outside validator.
docs_bp = get_swaggerui_blueprint(
    DOCS_URL, "/openapi.json", blueprint_name="docs", config={"app_name": "Answerback API", "validatorUrl": None}
)

TIME = {"type": ["string", "null"], "format": "date-time"}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False, text: str = "") -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": text}


# limit and offset, as every list takes them (receiver/validation.py page_meta)
PAGE_PARAMS = (
    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": PAGE_SIZE}),
    _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": MAX_QUERY_INT}),
)


WAIT = _param(
    "wait",
    "query",
    {"type": "integer", "minimum": 0, "maximum": MAX_WAIT},
    text="hold the answer up to N seconds until the request is finished",
)
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}
AUTH_ERRORS = {
    "401": _error("missing or invalid API key"),
    "503": {**_error("storage unavailable"), "headers": RETRY_AFTER},
}

RECORD = {
    "type": "object",
    "required": [
        "request_id",
        "status",
        "method",
        "path",
        "api_id",
        "submitted_at",
        "sent_at",
        "completed_at",
        "deadline",
        "attempts",
        "late",
        "response",
        "error",
        "retry_of",
        "retried_as",
    ],
    "properties": {
        "request_id": {"type": "string"},
        "status": {"enum": list(STATUSES)},
        "method": {"enum": list(METHODS)},
        "path": {"type": "string"},
        "callback_method": {"enum": list(CALLBACK_METHODS)},
        "api_id": {"type": ["string", "null"]},
        "submitted_at": TIME,
        "sent_at": TIME,
        "completed_at": TIME,
        "deadline": TIME,
        "attempts": {"type": "integer"},
        "late": {"type": "boolean"},
        "deliveries": {"type": "integer"},
        "response": {"type": ["object", "null"]},
        "error": {"type": ["object", "null"]},
        "notify": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Notify"}]},
        "retry_of": {"type": ["string", "null"], "description": "the request this one retries"},
        "retried_as": {"type": ["string", "null"], "description": "the request that retried this one"},
    },
}
BULK_STARTED = {
    "type": "object",
    "required": ["bulk_id", "count"],
    "properties": {"bulk_id": {"type": "string"}, "count": {"type": "integer"}},
}
BULK_COUNT = {"type": "object", "required": ["count"], "properties": {"count": {"type": "integer"}}}
BULK_PROGRESS = {
    "type": "object",
    "required": ["bulk_id", "status", "count", "retried", "skipped", "started_at", "finished_at"],
    "properties": {
        "bulk_id": {"type": "string"},
        "status": {"enum": ["running", "done"]},
        "count": {"type": "integer", "description": "requests it takes"},
        "retried": {"type": "integer"},
        "skipped": {"type": "integer", "description": "no longer failed or expired, or already retried"},
        "started_at": TIME,
        "finished_at": TIME,
    },
}
NOTIFY = {
    "type": "object",
    "required": ["url", "status", "attempts", "last_error", "delivered_at", "webhook_id"],
    "properties": {
        "url": {"type": "string"},
        "status": {"enum": list(NOTIFY_STATUSES)},
        "attempts": {"type": "integer", "description": "attempts of the latest event"},
        "last_error": {"type": ["string", "null"]},
        "delivered_at": TIME,
        "webhook_id": {"type": ["string", "null"], "description": "webhook-id of the latest event"},
    },
}
ATTEMPTS = {
    "type": "object",
    "required": ["objects"],
    "properties": {
        "objects": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["webhook_id", "type", "attempt", "at", "duration_ms", "status", "outcome", "error"],
                "properties": {
                    "webhook_id": {"type": "string"},
                    "type": {"type": "string"},
                    "attempt": {"type": "integer"},
                    "at": {"type": "string", "format": "date-time"},
                    "duration_ms": {"type": "number"},
                    "status": {"type": ["integer", "null"], "description": "the endpoint's HTTP status"},
                    "outcome": {"enum": list(ATTEMPT_OUTCOMES)},
                    "error": {"type": ["string", "null"]},
                    "next_at": {"type": "string", "format": "date-time", "description": "a retry: when it is due"},
                },
            },
        }
    },
}
PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["meta", "objects"],
    "properties": {
        "meta": {
            "type": "object",
            "required": ["limit", "offset", "total_count", "next", "previous"],
            "properties": {
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
                "total_count": {"type": "integer"},
                "next": {"type": ["string", "null"]},
                "previous": {"type": ["string", "null"]},
            },
        },
        "objects": {"type": "array", "items": {"$ref": "#/components/schemas/Request"}},
    },
}
NUMBER_OR_NULL = {"type": ["number", "null"]}
STATUS = {
    "type": "object",
    "required": ["workers_alive", "webs_alive", "sweep_age_seconds", "settings", "clock", "redis", "problems"],
    "properties": {
        "workers_alive": {"type": "integer", "description": "workers heart-beating on this web's queue"},
        "webs_alive": {"type": "integer"},
        "sweep_age_seconds": {**NUMBER_OR_NULL, "description": "null: no sweep has run"},
        "settings": {
            "type": "object",
            "required": ["distinct", "differing", "fingerprints"],
            "properties": {
                "distinct": {"type": "integer", "description": "distinct fingerprints among live processes"},
                "differing": {"type": "array", "items": {"type": "string"}, "description": "variables that differ"},
                "fingerprints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["fingerprint", "processes"],
                        "properties": {
                            "fingerprint": {"type": "string"},
                            "processes": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["kind", "host", "pid"],
                                    "properties": {
                                        "kind": {"enum": [WEB, WORKER]},
                                        "host": {"type": "string"},
                                        "pid": {"type": "integer"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
        "clock": {
            "type": "object",
            "required": ["offset_seconds", "max_offset_seconds"],
            "properties": {"offset_seconds": NUMBER_OR_NULL, "max_offset_seconds": NUMBER_OR_NULL},
        },
        "redis": {
            "type": "object",
            "required": ["durable", "appendonly", "maxmemory_policy"],
            "properties": {
                "durable": {"type": ["boolean", "null"], "description": "null: the provider forbids CONFIG"},
                "appendonly": {"type": ["string", "null"]},
                "maxmemory_policy": {"type": ["string", "null"]},
            },
        },
        "problems": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "see docs/operations.md, Health"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}
ADMIN_ERRORS = {**AUTH_ERRORS, "403": _error("not an admin key (ADMIN_API_KEYS)")}
QUARANTINED = {
    "type": "object",
    "required": ["id", "reason", "rid", "method", "url", "checked_url", "size", "received_at", "headers"],
    "properties": {
        "id": {"type": "string"},
        "reason": {"enum": list(REFUSAL_REASONS), "description": "what the webhook refused it for"},
        "rid": {"type": "string", "description": "the request id in its URL; empty when none or not a UUID"},
        "method": {"type": "string"},
        "url": {"type": "string", "description": "path and query as received"},
        "checked_url": {"type": "string", "description": "the URL its signature was checked against (no query)"},
        "size": {"type": "integer", "description": "bytes of its body and query"},
        "received_at": TIME,
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "those kept, without the signature headers",
        },
    },
}
QUARANTINE_PAGE = {
    **PAGE,
    "properties": {
        **PAGE["properties"],
        "objects": {"type": "array", "items": {"$ref": "#/components/schemas/Quarantined"}},
    },
}
RECHECK = {
    "type": "object",
    "required": ["checked", "applied", "outcomes", "quarantined"],
    "properties": {
        "checked": {"type": "integer"},
        "applied": {"type": "integer", "description": "now verified: applied as a new callback, taken out"},
        "outcomes": {"type": "object", "additionalProperties": {"type": "integer"}},
        "quarantined": {"type": "integer", "description": "left in the quarantine"},
    },
}
TIMELINE = {
    "type": "object",
    "required": ["request_id", "events", "dropped"],
    "properties": {
        "request_id": {"type": "string"},
        "events": {
            "type": "array",
            "description": "oldest first; each event's fields besides `at` and `event` only when known",
            "items": {
                "type": "object",
                "required": ["at", "event"],
                "additionalProperties": False,
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "event": {"enum": list(EVENT_NAMES)},
                    "idempotency_key": {"type": "string", "description": "submitted: as the client sent it"},
                    "retry_of": {"type": "string", "description": "submitted: the request this one retries"},
                    "attempt": {"type": "integer", "description": "sent, notification: 1-based"},
                    "upstream_status": {"type": "integer", "description": "sent: the upstream's HTTP status"},
                    "error": {"type": "string", "description": "sent, notification: what failed"},
                    "latency_ms": {"type": "integer", "description": "sent: until its answer was recorded"},
                    "outcome": {"type": "string", "description": "sent: accepted, retry, failed, unknown"},
                    "api_id": {"type": "string"},
                    "method": {"enum": list(CALLBACK_METHODS)},
                    "verdict": {"enum": ["matched", "duplicate", "late", "early", "refused"]},
                    "signature": {"enum": ["valid", "invalid", "unchecked"]},
                    "size": {"type": "integer", "description": "callback: bytes of its body"},
                    "reason": {"type": "string", "description": "why it failed, expired or was refused"},
                    "status_code": {"type": "integer", "description": "notification: the endpoint's HTTP status"},
                    "next_at": {
                        "type": "string",
                        "format": "date-time",
                        "description": "notification: tried again then",
                    },
                    "retried_as": {"type": "string", "description": "retried: the new request's id"},
                },
            },
        },
        "dropped": {"type": "integer", "description": "older events no longer kept (the newest 50 are)"},
    },
}
COUNT_LIST = {"type": "array", "items": {"type": "integer", "minimum": 0}}
PERCENTILE_LIST = {"type": "array", "items": {"type": ["number", "null"], "minimum": 0}}
SERIES = {
    "type": "object",
    "required": ["window", "scope", "step_s", "start", "end", "series"],
    "properties": {
        "window": {"enum": list(series.WINDOWS)},
        "scope": {"enum": list(SCOPES)},
        "step_s": {"type": "integer", "description": "seconds per step: 60 (hour), 600 (day), 3600 (week)"},
        "start": {"type": "string", "format": "date-time", "description": "the first step's start"},
        "end": {"type": "string", "format": "date-time", "description": "the last step's end (it holds now)"},
        "series": {
            "type": "object",
            "description": "one value per step in every list; percentiles in ms, null for a step without any",
            "required": [
                *series.COUNTS,
                *(f"{name}_p{q}_ms" for name in series.HISTOGRAMS for q in series.PERCENTILES),
            ],
            "properties": {
                **dict.fromkeys(series.COUNTS, COUNT_LIST),
                **{f"{name}_p{q}_ms": PERCENTILE_LIST for name in series.HISTOGRAMS for q in series.PERCENTILES},
            },
        },
    },
}
SUMMARY = {
    "type": "object",
    "required": ["scope", "counts"],
    "properties": {
        "scope": {"enum": list(SCOPES)},
        "counts": {
            "type": "object",
            "description": "tenant: its requests by status now; all: the global counters and gauges, and quarantined",
            "additionalProperties": {"type": "integer", "minimum": 0},
            "propertyNames": {"enum": [*STATUSES, *GLOBAL_FIGURES, "quarantined"]},
        },
    },
}
SCOPE_PARAM = _param(
    "scope", "query", {"enum": list(SCOPES)}, text="tenant (the key's own, the default) or all (an admin key only)"
)
CALLBACK_ANSWER = {"type": "object", "required": ["outcome"], "properties": {"outcome": {"enum": [*OUTCOMES, SPOOLED]}}}
CALLBACK_RESPONSES = {
    "200": _json("CallbackOutcome", "delivery stored"),
    "400": _error("no usable api_id, or a body that cannot be parsed"),
    "403": _error("missing or invalid Plivo signature (the callback is kept in the quarantine)"),
    "413": _error("body too large"),
    "503": _error("cannot be stored in Redis within CALLBACK_HOLD, nor spooled"),
}
SECURED: list[dict[str, list[str]]] = [{"bearer": []}]


PATHS: dict[str, Any] = {
    "/v1/requests": {
        "post": {
            "summary": "Submit an asynchronous upstream request",
            "security": SECURED,
            "parameters": [
                _param(
                    "Idempotency-Key", "header", {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY}
                )
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Submission"}}},
            },
            "responses": {
                "202": _json("Request", "accepted"),
                "400": _error("invalid submission"),
                "413": _error("body too large"),
                "415": _error("not JSON"),
                "422": _error("Idempotency-Key reused with another body, or a notify_url outside NOTIFY_HOSTS"),
                **AUTH_ERRORS,
            },
        },
        "get": {
            "summary": "List this key's requests, newest first",
            "security": SECURED,
            "parameters": [
                *PAGE_PARAMS,
                _param("status", "query", {"enum": list(STATUSES)}),
                _param(
                    "q",
                    "query",
                    {"type": "string", "minLength": 1, "maxLength": MAX_FILTER_TEXT},
                    text="one exact request id, api_id or Idempotency-Key",
                ),
                _param(
                    "path",
                    "query",
                    {"type": "string", "maxLength": MAX_FILTER_TEXT, "pattern": PATH_PATTERN},
                    text="exact upstream path, e.g. Message/",
                ),
                _param("since", "query", {"type": "string", "format": "date-time"}, text="inclusive, on submitted_at"),
                _param("until", "query", {"type": "string", "format": "date-time"}, text="inclusive, on submitted_at"),
            ],
            "responses": {
                "200": _json("Page", "a page"),
                "400": _error("a bad filter or page value (named in `parameter`), or an unknown query parameter"),
                **AUTH_ERRORS,
            },
        },
    },
    "/v1/requests/{request_id}/retry": {
        "post": {
            "summary": "Submit a failed or expired request again, as a new request (once)",
            "security": SECURED,
            "parameters": [_param("request_id", "path", {"type": "string"}, True)],
            "responses": {
                "202": _json("Request", "the new request"),
                "400": _error("a query parameter (it takes none)"),
                "404": _error("unknown id"),
                "409": _error("not failed or expired (`status`), or already retried (`retried_as`)"),
                **AUTH_ERRORS,
            },
        },
    },
    "/v1/requests/retry": {
        "post": {
            "summary": "Retry every failed or expired request a filter matches (the workers do it)",
            "security": SECURED,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BulkRetry"}}},
            },
            "responses": {
                "200": _json("BulkRetryCount", "preview: how many it would take"),
                "202": _json("BulkRetryStarted", "started"),
                "400": _error("a bad filter value, a value of the wrong type, or a query parameter"),
                "415": _error("not JSON"),
                "422": _error(f"more than {MAX_BULK} requests match"),
                **AUTH_ERRORS,
            },
        },
    },
    "/v1/requests/retry/{bulk_id}": {
        "get": {
            "summary": "A bulk retry's progress",
            "security": SECURED,
            "parameters": [_param("bulk_id", "path", {"type": "string"}, True)],
            "responses": {
                "200": _json("BulkRetryProgress", "its progress"),
                "404": _error("unknown id"),
                **AUTH_ERRORS,
            },
        },
    },
    "/v1/requests/{request_id}": {
        "get": {
            "summary": "Read (or wait for) a request",
            "security": SECURED,
            "parameters": [_param("request_id", "path", {"type": "string"}, True), WAIT],
            "responses": {
                "200": _json("Request", "the record"),
                "400": _error("bad wait, or an unknown query parameter"),
                "404": _error("unknown id"),
                **AUTH_ERRORS,
            },
        },
    },
    "/v1/requests/{request_id}/deliveries": {
        "get": {
            "summary": "Every callback delivery of a request",
            "security": SECURED,
            "parameters": [_param("request_id", "path", {"type": "string"}, True)],
            "responses": {"200": {"description": "deliveries"}, "404": _error("unknown id"), **AUTH_ERRORS},
        },
    },
    "/v1/requests/{request_id}/notifications": {
        "get": {
            "summary": "Every notification attempt of a request",
            "security": SECURED,
            "parameters": [_param("request_id", "path", {"type": "string"}, True)],
            "responses": {
                "200": _json("NotificationAttempts", "attempts, oldest first"),
                "404": _error("unknown id"),
                **AUTH_ERRORS,
            },
        },
    },
    "/v1/requests/{request_id}/events": {
        "get": {
            "summary": "A request's timeline: what happened to it, in time order",
            "security": SECURED,
            "parameters": [_param("request_id", "path", {"type": "string"}, True)],
            "responses": {
                "200": _json("Timeline", "its events, oldest first"),
                "404": _error("unknown id, or another tenant's"),
                **AUTH_ERRORS,
            },
        },
    },
    "/v1/requests/{request_id}/notify": {
        "post": {
            "summary": "Send the notification of a finished request again, now (a new webhook-id)",
            "security": SECURED,
            "parameters": [_param("request_id", "path", {"type": "string"}, True)],
            "responses": {
                "202": _json("Request", "queued"),
                "404": _error("unknown id"),
                "409": _error("no notify_url, or not finished"),
                **AUTH_ERRORS,
            },
        },
    },
    "/v1/results/{api_id}": {
        "get": {
            "summary": "Read (or wait for) a request by the upstream's api_id",
            "security": SECURED,
            "parameters": [_param("api_id", "path", {"type": "string"}, True), WAIT],
            "responses": {
                "200": _json("Request", "the record"),
                "400": _error("bad wait, or an unknown query parameter"),
                "404": _error("unknown api_id"),
                **AUTH_ERRORS,
            },
        },
    },
    "/v1/status": {
        "get": {
            "summary": "The system's health: workers alive, the sweep, settings, clocks, Redis, problems",
            "security": SECURED,
            "responses": {"200": _json("Status", "the health now"), **AUTH_ERRORS},
        },
    },
    "/v1/series": {
        "get": {
            "summary": "Figures per step over the last hour, day or week: the key's tenant's, or all (admin key)",
            "security": SECURED,
            "parameters": [
                _param("window", "query", {"enum": list(series.WINDOWS)}, text="hour (the default)"),
                SCOPE_PARAM,
            ],
            "responses": {
                "200": _json("Series", "the figures"),
                "400": _error("bad window or scope, or an unknown query parameter"),
                **ADMIN_ERRORS,
                "403": _error("scope=all with a key not in ADMIN_API_KEYS"),
            },
        },
    },
    "/v1/summary": {
        "get": {
            "summary": "Counts now: the key's tenant's requests by status, or the global figures (admin key)",
            "security": SECURED,
            "parameters": [SCOPE_PARAM],
            "responses": {
                "200": _json("Summary", "the counts"),
                "400": _error("bad scope, or an unknown query parameter"),
                **ADMIN_ERRORS,
                "403": _error("scope=all with a key not in ADMIN_API_KEYS"),
            },
        },
    },
    "/v1/quarantine": {
        "get": {
            "summary": "List the quarantined callbacks, newest first (admin key)",
            "security": SECURED,
            "parameters": [
                *PAGE_PARAMS,
            ],
            "responses": {
                "200": _json("QuarantinePage", "a page"),
                "400": _error("bad limit or offset, or an unknown query parameter"),
                **ADMIN_ERRORS,
            },
        },
    },
    "/v1/quarantine/recheck": {
        "post": {
            "summary": "Verify the quarantined callbacks again with the current settings; apply those that pass",
            "security": SECURED,
            "responses": {"200": _json("Recheck", "what the re-check did"), **ADMIN_ERRORS},
        },
    },
    "/callbacks/plivo": {
        "post": {
            "summary": "Plivo callback (JSON or form body), V3-signed",
            "parameters": [_param("rid", "query", {"type": "string"})],
            "requestBody": {
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                }
            },
            "responses": CALLBACK_RESPONSES,
        },
        "get": {
            "summary": "Plivo callback (query string), V3-signed",
            "parameters": [_param("rid", "query", {"type": "string"}), _param("api_id", "query", {"type": "string"})],
            "responses": CALLBACK_RESPONSES,
        },
    },
    "/healthz": {"get": {"summary": "Process up", "responses": {"200": {"description": "up"}}}},
    "/readyz": {
        "get": {
            "summary": "Redis reachable",
            "responses": {"200": {"description": "ready"}, "503": _error("not ready")},
        }
    },
    "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format"}}}},
    "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
    DOCS_URL + "/": {
        "get": {"summary": "This document, to read (Swagger UI)", "responses": {"200": {"description": "HTML"}}}
    },
    "/": {
        "get": {
            "summary": "The operator's console (a sign-in form until a key is entered)",
            "responses": {"200": {"description": "HTML"}},
        }
    },
}


@cache
def document(settings: Settings) -> dict[str, Any]:
    """The document for this deployment (its settings decide the longest callback_timeout, and
    whether a submission may carry a notify_url: only with NOTIFY_HOSTS)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Answerback",
            "version": "1.0.0",
            "description": "Callback receiver for asynchronous Plivo-style API requests.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Request": RECORD,
                "Submission": submission_schema(settings.max_callback_timeout, bool(settings.notify_hosts)),
                "Page": PAGE,
                "Error": ERROR,
                "CallbackOutcome": CALLBACK_ANSWER,
                "Notify": NOTIFY,
                "NotificationAttempts": ATTEMPTS,
                "Timeline": TIMELINE,
                "Status": STATUS,
                "Quarantined": QUARANTINED,
                "QuarantinePage": QUARANTINE_PAGE,
                "Recheck": RECHECK,
                "Series": SERIES,
                "Summary": SUMMARY,
                "BulkRetry": BulkRetryIn.model_json_schema(),
                "BulkRetryCount": BULK_COUNT,
                "BulkRetryStarted": BULK_STARTED,
                "BulkRetryProgress": BULK_PROGRESS,
            },
        },
        "paths": PATHS,
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(document(services().settings))
