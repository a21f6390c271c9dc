"""gunicorn's logger for the web process (gunicorn.conf.py names it): gunicorn's error and
access lines and the app's own, all in LOG_FORMAT and tagged with the request's ids."""
from __future__ import annotations

from gunicorn import glogging

import logs
from config import Settings


class Logger(glogging.Logger):
    def setup(self, cfg) -> None:
        super().setup(cfg)
        log_format = Settings.from_env().log_format
        logs.configure(log_format, cfg.loglevel)
        if log_format == "text":
            return   # gunicorn's own lines keep gunicorn's own format
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                logs.use_format(handler, log_format)

    def access(self, resp, req, environ, request_time) -> None:
        """The access line carries the ids the views bound; then this thread (or greenlet)
        forgets them, so that gunicorn's lines before the next request do not carry them."""
        try:
            super().access(resp, req, environ, request_time)
        finally:
            logs.clear()
