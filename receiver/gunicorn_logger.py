"""gunicorn's logger for the web process (gunicorn.conf.py names it): gunicorn's error and
access lines and the app's own, all in LOG_FORMAT and tagged with the request's ids.

It uses gunicorn's documented way in only (the logger_class setting: a subclass of
gunicorn.glogging.Logger, its `setup(cfg)` and `access(resp, req, environ, request_time)`,
and the loggers named "gunicorn.error" and "gunicorn.access");
tests/contracts/test_gunicorn_contract.py checks them against the installed gunicorn."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from gunicorn import glogging

import logs
from config import Settings

if TYPE_CHECKING:
    from gunicorn.config import Config
    from gunicorn.http.message import Request
    from gunicorn.http.wsgi import Response

GUNICORN_LOGGERS = ("gunicorn.error", "gunicorn.access")


class Logger(glogging.Logger):
    def setup(self, cfg: Config) -> None:
        super().setup(cfg)
        log_format = Settings.from_env().log_format
        logs.configure(log_format, cfg.loglevel)
        if log_format == "text":
            return  # gunicorn's own lines keep gunicorn's own format
        for name in GUNICORN_LOGGERS:
            for handler in logging.getLogger(name).handlers:
                logs.use_format(handler, log_format)

    def access(self, resp: Response, req: Request, environ: dict[str, Any], request_time: timedelta) -> None:
        """The access line carries the ids the views bound; then this thread (or greenlet)
        forgets them, so that gunicorn's lines before the next request do not carry them."""
        try:
            super().access(resp, req, environ, request_time)
        finally:
            logs.clear()
