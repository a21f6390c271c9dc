"""Hypothesis strategies for fuzzing the web app: requests of every kind, bodies that once
broke it (JSON nested 5000 deep, ids that name another key of a request such as
`{rid}:deliveries`, NaN, numbers past a double, Unicode digits, bodies past MAX_BODY_BYTES).

Strategies that name real requests draw from `Pools`, the ids of a seed state that every
example starts from afresh (tests/support/fuzz_state.py): the pools never change during a test,
so an example replays and shrinks the same way."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import strategies as st

KEY, OTHER_KEY = "fuzz-key-one", "fuzz-key-two"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass(frozen=True)
class Pools:
    """Ids of the seed state's requests: KEY's, OTHER_KEY's, and the api_ids delivered to them."""

    own: tuple[str, ...]
    other: tuple[str, ...]
    api_ids: tuple[str, ...]

    @property
    def known(self) -> tuple[str, ...]:
        return tuple(sorted({*self.own, *self.other, *self.api_ids}))


HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**200), 2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
UNICODE_DIGITS = ["\u0665", "\u0661\u0665", "\u096a", "\uff15", "\u2465"]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "application/vnd.x+json",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data",
    "multipart/form-data; boundary=zz",
    "text/plain",
    "application/xml",
    "application/json; charset=no-such-charset",
    ";;",
    "application/",
    "*/*",
]
SUB_METHODS = ["POST", "GET", "DELETE", "post", "Get", "dElEtE", "PUT", "", "HEAD", "P\u00d6ST"]
SUB_PATHS = [
    "Call/",
    "Message/",
    "Call/abc-1/Record/",
    "Call",
    "Recording/x.y~z/",
    "/Call/",
    "Call/../x/",
    "https://evil.example/Call/",
    "//evil.example/Call/",
    "Call\\x/",
    "./Call/",
    "Call//",
    "Call/%2e%2e/",
    "Ca ll/",
    "\u0421all/",
    "",
    "/",
    "Call/./",
    "a" * 300,
]

garbage_bytes = st.binary(max_size=200)
flat_params = st.dictionaries(
    st.text(max_size=10).filter(lambda k: k not in ("callback_url", "callback_method")),
    SCALARS | st.lists(st.text(max_size=5) | st.integers(), max_size=3),
    max_size=5,
)
valid_submission = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["POST", "GET", "DELETE", "post", "get"]),
        "path": st.sampled_from(["Call/", "Message/", "Call/abc-1/Record/", "Call", "Account/x/"]),
    },
    optional={
        "params": flat_params,
        "callback_method": st.sampled_from(["GET", "POST", "get", "post"]),
        "callback_timeout": st.integers(1, 86400) | st.integers(1, 10**12),
    },
)
any_submission = st.fixed_dictionaries(
    {},
    optional={
        "method": st.sampled_from(SUB_METHODS) | JSON_VALUES,
        "path": st.sampled_from(SUB_PATHS) | st.text(max_size=30) | JSON_VALUES,
        "params": st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5)
        | JSON_VALUES
        | st.fixed_dictionaries({"callback_url": st.text(max_size=10)}),
        "callback_method": st.sampled_from(["GET", "POST", "get", "PUT", ""]) | JSON_VALUES,
        "callback_timeout": (
            st.integers(-5, 10**6)
            | st.integers()
            | st.floats()
            | st.text(max_size=5)
            | st.booleans()
            | st.none()
            | st.sampled_from(UNICODE_DIGITS)
        ),
    },
)
submission_with_extra = st.tuples(
    valid_submission, st.dictionaries(st.text(max_size=8), JSON_VALUES, min_size=1, max_size=2)
).map(lambda pair: {**pair[1], **pair[0]})
API_ID_VALUES = (
    st.uuids().map(str)
    | st.text(max_size=40)
    | JSON_VALUES
    | st.sampled_from(
        [
            "",
            "not-a-uuid",
            "urn:uuid:6f1c2a34-5b6d-4e7f-8a9b-0c1d2e3f4a5b",
            "{6F1C2A34-5B6D-4E7F-8A9B-0C1D2E3F4A5B}",
            "6f1c2a345b6d4e7f8a9b0c1d2e3f4a5b",
            "\u0660" * 32,
            "6f1c2a34-5b6d-4e7f-8a9b-0c1d2e3f4a5",
            " " * 36,
        ]
    )
)
callback_body = st.tuples(
    st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4), API_ID_VALUES, st.booleans()
).map(lambda t: {**t[0], "api_id": t[1]} if t[2] else t[0])


def pick(pool: tuple[str, ...]) -> st.SearchStrategy[str]:
    """An item of a pool, drawn as an index: shrinking an index changes the id, not the shape."""
    return st.integers(0, 1 << 16).map(lambda i: pool[i % len(pool)])


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def form_bytes(pairs: list[tuple[str, str]]) -> bytes:
    return urlencode(pairs).encode()


form_pairs = st.lists(
    st.tuples(
        st.sampled_from(["api_id", "method", "path", "status", "rid"]) | st.text(max_size=8),
        st.uuids().map(str) | st.text(max_size=12),
    ),
    max_size=5,
)
# Bodies nested past Python's recursion limit, and bodies past MAX_BODY_BYTES (64 KiB).
deep_json = st.sampled_from([20, 500, 1200, 5000]).flatmap(
    lambda depth: st.sampled_from(
        [
            b"[" * depth + b"]" * depth,
            b'{"api_id":"6f1c2a34-5b6d-4e7f-8a9b-0c1d2e3f4a5b","x":' + b"[" * depth + b"]" * depth + b"}",
            b'{"method":"POST","path":"Call/","params":{"a":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}}",
        ]
    )
)
oversized = st.sampled_from([b'{"api_id":"' + b"x" * 70_000 + b'"}', b"y" * 65_537])
odd_json = st.sampled_from(
    [
        b'{"method":"POST","path":"Call/","params":{"x":NaN}}',
        b"NaN",
        b"-Infinity",
        b'{"api_id":"6f1c2a34-5b6d-4e7f-8a9b-0c1d2e3f4a5b","n":1e999}',
        b'"\\ud800"',
        b'{"method":"POST","path":"Call/","params":{"\\udfff":"\\ud800"}}',
        b'{"a":1' + b"9" * 5000 + b"}",
        b"\xef\xbb\xbf{}",
        b"{}",
        b"[]",
        b"null",
        b"",
        b'{"method":"POST","path":"Call/","method":"PUT"}',
        '{"p":"\u00e9"}'.encode("utf-16"),
    ]
)
any_body = st.one_of(
    st.just(b""),
    garbage_bytes,
    JSON_VALUES.map(dumps),
    any_submission.map(dumps),
    valid_submission.map(dumps),
    submission_with_extra.map(dumps),
    callback_body.map(dumps),
    form_pairs.map(form_bytes),
    deep_json,
    oversized,
    odd_json,
)


@dataclass
class Req:
    app: str
    method: str
    path: str  # decoded path
    query: list[tuple[str, str]]  # decoded pairs
    raw_query: str = ""  # appended undecoded: bad escapes and the like
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def target(self) -> str:
        query = urlencode(self.query, quote_via=quote)
        if self.raw_query:
            query = f"{query}&{self.raw_query}" if query else self.raw_query
        return quote(self.path, safe="/%:@!$&'()*+,;=~-._") + ("?" + query if query else "")


def would_wait(value: str) -> bool:
    """What the app might take as a wait of 1 second or more (\\d: Unicode digits too, as it once did)."""
    return bool(re.fullmatch(r"\d{1,9}", value)) and int(value) >= 1


def without_long_waits(req: Req, pools: Pools) -> Req:
    """No worker runs on this database: a real id's ?wait=N would hold the test for N seconds."""
    if any(known in req.path for known in pools.known):
        req.query = [(k, "0" if k == "wait" and would_wait(v) else v) for k, v in req.query]
    return req


@st.composite
def auth_headers(draw, weight_valid: int = 1) -> dict[str, str]:
    choice = draw(
        st.sampled_from(["valid"] * weight_valid + ["other", "none", "garbage", "bearer-garbage", "basic", "odd-case"])
    )
    return {
        "valid": bearer(KEY),
        "other": bearer(OTHER_KEY),
        "none": {},
        "garbage": {"Authorization": draw(HEADER_TEXT)},
        "bearer-garbage": {"Authorization": "Bearer " + draw(HEADER_TEXT)},
        "basic": {"Authorization": "Basic " + draw(st.sampled_from(["eDp5", "", "!!!", KEY]))},
        "odd-case": {"Authorization": f"bEaReR   {KEY}  "},
    }[choice]


@st.composite
def misc_headers(draw) -> dict[str, str]:
    headers: dict[str, str] = {}
    content_type = draw(st.sampled_from(CONTENT_TYPES) | HEADER_TEXT)
    if content_type is not None:
        headers["Content-Type"] = content_type
    for name in (
        "Idempotency-Key",
        "X-Plivo-Signature-V3",
        "X-Plivo-Signature-V3-Nonce",
        "X-Plivo-Signature-Ma-V3",
        "X-Plivo-Signature-V2",
        "Accept",
    ):
        if draw(st.integers(0, 3)) == 0:
            headers[name] = draw(HEADER_TEXT | st.text("abcdefABCDEF0123456789+/=,", max_size=60))
    return headers


@st.composite
def segments(draw, pools: Pools) -> str:
    real = draw(st.sampled_from([p for p in (pools.own, pools.other, pools.api_ids) if p]))
    return draw(
        st.one_of(
            pick(real),
            st.text(max_size=40),
            st.uuids().map(str),
            st.tuples(pick(real), st.sampled_from([":deliveries", ":digests", ":x", " ", "/"])).map("".join),
            st.sampled_from(["..", ".", "%2F", "%00", "%ff", "*", "ab:metrics", "01" * 20, "\u0000", "a" * 2000]),
        )
    )


QUERY_NAMES = ["limit", "offset", "wait", "status", "rid", "api_id"]
query_values = st.one_of(
    st.integers(-100, 100).map(str),
    st.integers().map(str),
    st.text(max_size=12),
    st.sampled_from(UNICODE_DIGITS),
    st.sampled_from(["", "queued", "completed", "bogus", "20", "0", "1.5", "1e3", " 1", "0x10", "61", "-0"]),
)
raw_query = st.sampled_from(
    ["", "", "", "&", "&&=", "%", "%zz", "%ff%fe=%c3", "limit=%e2%82", ";x=1", "=", "rid", "wait=%D9%A5&wait=1"]
)


@st.composite
def queries(draw, pools: Pools) -> list[tuple[str, str]]:
    names = st.sampled_from(QUERY_NAMES) | st.text(max_size=6)
    values = query_values | pick(pools.known)
    return draw(st.lists(st.tuples(names, values), max_size=4))


def mostly(usual: st.SearchStrategy, odd: st.SearchStrategy, tenths: int = 8) -> st.SearchStrategy:
    """`usual` about tenths/10 of the time, else `odd`: targeted requests get through to the
    interesting code often enough, and are still bent in every way now and then."""
    return st.integers(0, 9).flatmap(lambda i: usual if i < tenths else odd)


JSON_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-8", "application/JSON"])
FORM_TYPES = st.sampled_from(["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8"])
ANY_TYPE = st.sampled_from(CONTENT_TYPES) | HEADER_TEXT
VALID_API_ID = st.uuids().map(str)


MOSTLY_A_KEY = mostly(st.just(bearer(KEY)) | st.just(bearer(OTHER_KEY)), auth_headers())
RARELY_MISC_HEADERS = mostly(st.just({}), misc_headers(), 7)
SUBMISSION_TYPE = mostly(JSON_TYPES, ANY_TYPE | st.none())
IDEMPOTENCY_KEYS = st.sampled_from(["idem-1", "idem-2", "", "k" * 256]) | HEADER_TEXT
SUBMISSION_BODY = mostly(
    valid_submission.map(dumps), st.one_of(any_submission.map(dumps), submission_with_extra.map(dumps), any_body), 6
)
MOSTLY_POST = mostly(st.just("POST"), st.sampled_from(HTTP_METHODS), 9)
MOSTLY_GET = mostly(st.just("GET"), st.sampled_from(HTTP_METHODS))
MOSTLY_NO_BODY = mostly(st.just(b""), any_body)
CALLBACK_METHOD = mostly(st.sampled_from(["POST", "POST", "GET"]), st.sampled_from(HTTP_METHODS), 9)
CALLBACK_FIELDS = mostly(
    st.builds(
        lambda extra, api_id: {**extra, "api_id": api_id},
        st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4),
        mostly(VALID_API_ID, API_ID_VALUES),
    ),
    callback_body,
)
MOSTLY_JSON_TYPE, MOSTLY_FORM_TYPE = mostly(JSON_TYPES, ANY_TYPE), mostly(FORM_TYPES, ANY_TYPE)
FORM_JUNK = form_pairs.map(form_bytes) | any_body
SIGNATURE_HEADERS = st.builds(
    lambda sig, nonce: {"X-Plivo-Signature-V3": sig, "X-Plivo-Signature-V3-Nonce": nonce},
    st.text("abcdefABCDEF0123456789+/=, ", max_size=90),
    HEADER_TEXT,
)


@st.composite
def submission_requests(draw, pools: Pools) -> Req:
    headers = draw(MOSTLY_A_KEY) | draw(RARELY_MISC_HEADERS)
    content_type = draw(SUBMISSION_TYPE)
    if content_type is not None:
        headers["Content-Type"] = content_type
    if draw(st.integers(0, 3)) == 0:
        headers["Idempotency-Key"] = draw(IDEMPOTENCY_KEYS)
    body = draw(SUBMISSION_BODY)
    method = draw(MOSTLY_POST)
    query = draw(mostly(st.just([]), queries(pools)))
    return Req(
        draw(st.sampled_from(["signed", "unsigned"])), method, "/v1/requests", query, draw(raw_query), headers, body
    )


@st.composite
def read_requests(draw, pools: Pools) -> Req:
    seg = draw(segments(pools))
    path = draw(
        st.sampled_from(
            ["/v1/requests", "/v1/requests/{}", "/v1/results/{}", "/v1/requests/{}/deliveries", "/v1/requests/{}/"]
        )
    ).format(seg)
    method = draw(MOSTLY_GET)
    headers = draw(MOSTLY_A_KEY) | draw(RARELY_MISC_HEADERS)
    body = draw(MOSTLY_NO_BODY)
    return Req(
        draw(st.sampled_from(["signed", "unsigned"])),
        method,
        path,
        draw(queries(pools)),
        draw(raw_query),
        headers,
        body,
    )


@st.composite
def callback_requests(draw, pools: Pools) -> Req:
    method = draw(CALLBACK_METHOD)
    query = draw(mostly(st.just([]), queries(pools)))
    if draw(st.booleans()):
        real = pools.own + pools.other
        query.append(
            (
                "rid",
                draw(
                    st.one_of(
                        pick(real),
                        st.text(max_size=20),
                        st.uuids().map(str),
                        pick(real).map(lambda r: r + ":deliveries"),
                    )
                ),
            )
        )
    fields = draw(CALLBACK_FIELDS)
    headers = draw(RARELY_MISC_HEADERS)
    shape = draw(st.sampled_from(["json", "form", "other"]))
    if method == "GET":
        query += [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items()]
        body = draw(MOSTLY_NO_BODY)
    elif shape == "json":
        headers["Content-Type"] = draw(MOSTLY_JSON_TYPE)
        body = dumps(fields) if draw(st.integers(0, 9)) < 8 else draw(any_body)
    elif shape == "form":
        headers["Content-Type"] = draw(MOSTLY_FORM_TYPE)
        pairs = [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items()]
        body = form_bytes(pairs) if draw(st.integers(0, 9)) < 8 else draw(FORM_JUNK)
    else:
        headers["Content-Type"] = draw(ANY_TYPE)
        body = draw(any_body)
    if draw(st.booleans()):
        headers |= draw(SIGNATURE_HEADERS)
    return Req(
        draw(st.sampled_from(["signed", "unsigned"])), method, "/callbacks/plivo", query, draw(raw_query), headers, body
    )


@st.composite
def random_requests(draw, pools: Pools) -> Req:
    path = draw(
        st.one_of(
            st.sampled_from(
                [
                    "/",
                    "/healthz",
                    "/readyz",
                    "/metrics",
                    "/openapi.json",
                    "/v1",
                    "/v1/",
                    "/callbacks",
                    "/callbacks/plivo/",
                    "/v1/requests/",
                    "//v1/requests",
                    "/v1//requests",
                    "/static/x",
                    "/favicon.ico",
                ]
            ),
            st.text(max_size=30).map(lambda t: "/" + t),
            segments(pools).map(lambda s: "/v1/requests/" + s),
        )
    )
    headers = draw(auth_headers()) | draw(misc_headers())
    return Req(
        draw(st.sampled_from(["signed", "unsigned"])),
        draw(st.sampled_from(HTTP_METHODS)),
        path,
        draw(queries(pools)),
        draw(raw_query),
        headers,
        draw(any_body),
    )


# --- callbacks that must reach the store -------------------------------------------------

FIELD_NAMES = st.text(min_size=1, max_size=10).filter(lambda k: k not in ("api_id", "rid"))
FORM_VALUES = st.text(max_size=15) | st.lists(st.text(max_size=8), min_size=2, max_size=3)
RICH_JSON = st.recursive(
    SCALARS | st.integers(-(10**60), 10**60) | st.text(st.characters(min_codepoint=0x80), max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


# --- raw HTTP to a real server (h11 sends only visible ASCII in headers) ---------------------

VISIBLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)  # as h11 sends
RAW_PATHS = st.one_of(
    st.sampled_from(
        [
            "/",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/v1/requests",
            "/v1/requests/x",
            "/v1/results/x",
            "/v1/requests/x/deliveries",
            "/callbacks/plivo",
            "/callbacks/plivo?rid=x",
            "/v1/requests?limit=abc&offset=-1",
            "/v1/requests?limit=%ff",
            "/v1/requests/x?wait=%D9%A5",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/v1/requests/" + "a" * 3000,
        ]
    ),
    st.text(max_size=30).map(lambda t: "/" + quote(t, safe="/?&=%")),
    st.uuids().map(lambda u: f"/v1/requests/{u}?wait=0"),
)
