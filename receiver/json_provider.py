"""JSON answers written by orjson: several times faster than the standard library for the
records and outcomes every request answers with (bench/README.md, profiling)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

# Types orjson would write differently from Flask (dates as RFC 3339, not HTTP dates) go to Flask.
PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


class FastJSONProvider(DefaultJSONProvider):
    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """compact_json for compact answers (jsonify asks for compact separators); Flask's own
        for indented ones (debug mode)."""
        if "indent" in kwargs:
            return super().dumps(obj, **kwargs)
        return compact_json(obj)


def compact_json(obj: Any) -> str:
    """What jsonify writes, also for an answer made without an app context (receiver/errors.py):
    orjson, or Flask's own encoding for what orjson cannot write (integers past 64 bits, other types)."""
    try:
        return orjson.dumps(obj, option=PASSTHROUGH).decode()
    except TypeError:
        return json.dumps(
            obj,
            default=DefaultJSONProvider.default,
            ensure_ascii=DefaultJSONProvider.ensure_ascii,
            sort_keys=FastJSONProvider.sort_keys,
            separators=(",", ":"),
        )
