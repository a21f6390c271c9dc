"""Log lines of web and workers: plain text, or with LOG_FORMAT=json one JSON object a line
(time, level, logger, message, and request_id / api_id wherever one applies), so that a
log pipeline can index them by request.

The ids travel in a context variable rather than in each call's arguments: a view or a send
binds them once, and every line logged under it carries them, gunicorn's access line
included (it is written in the thread, or greenlet, that served the request).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"

# Never mutated, only replaced: the default is read-only so no caller can change it for all contexts.
_ids: ContextVar[Mapping[str, str]] = ContextVar("log_ids", default=MappingProxyType({}))


def _joined(ids: dict[str, str]) -> dict[str, str]:
    return {**_ids.get(), **{name: value for name, value in ids.items() if value}}


def bind(**ids: str) -> None:
    """Tag every later line of this request (thread or greenlet) with these ids."""
    _ids.set(_joined(ids))


def clear() -> None:
    """Forget the ids of the previous request served by this thread or greenlet."""
    _ids.set({})


@contextmanager
def tagged(**ids: str) -> Iterator[None]:
    """Tag the lines logged inside the block; a pool thread forgets them afterwards."""
    token = _ids.set(_joined(ids))
    try:
        yield
    finally:
        _ids.reset(token)


class RequestIds(logging.Filter):
    """Copies the bound ids onto each record, where the JSON formatter finds them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _ids.get().items():
            setattr(record, name, value)
        return True


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(
            ["levelname", "name", "message"], timestamp="time", rename_fields={"levelname": "level", "name": "logger"}
        )
    return logging.Formatter(TEXT_FORMAT)


# Libraries that log every URL they request (httpx at INFO, httpcore at DEBUG): a notify_url
# may carry its endpoint's token in its path or query, so they log warnings and above only.
URL_LOGGERS = ("httpx", "httpcore", "urllib3", "hpack")


def use_format(handler: logging.Handler, log_format: str) -> None:
    """Give a handler someone else made (gunicorn's) our format and the request ids."""
    handler.setFormatter(formatter(log_format))
    if not any(isinstance(f, RequestIds) for f in handler.filters):
        handler.addFilter(RequestIds())


def configure(log_format: str, level: str) -> None:
    """The root logger writes every line of the process to stderr in `log_format`.

    Called before RQ sets up its loggers: RQ 3 gives 'rq.worker' and 'rq.job' handlers of
    its own (and stops them propagating) only when no ancestor has one, so with the root
    configured first their lines come here too."""
    handler = logging.StreamHandler(sys.stderr)
    use_format(handler, log_format)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in URL_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)  # a warning is a log line too, not a raw stderr print
