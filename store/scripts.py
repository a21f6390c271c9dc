"""The atomic steps of a request's life, as Lua scripts run by Redis.

Every register or match step is one script, so no interleaving of web and
worker processes can lose or double-apply anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from redis import Redis
from redis.commands.core import Script
from redis.exceptions import ConnectionError, NoScriptError

from store import keys
from store.keys import API_CLASSES, METRICS, PREFIX
from store.metrics import HISTOGRAM_BUCKETS, HISTOGRAM_PREFIX
from store.record_format import lua_definitions
from store.redis_internals import evalsha, one_node
from store.series import lua_definitions as series_definitions

# What a script takes as an argument (redis-py encodes each of these).
ScriptArg = str | int | float | bytes
LUA = Path(__file__).with_name("lua")
NAMES = (
    "submit",
    "claim",
    "hand_over",
    "mark_sending",
    "register_api_id",
    "settle",
    "match_callback",
    "sweep",
    "rate_limit",
    "page",
    "page_scan",
    "read",
    "retry",
    "bulk_retry",
    "notify_claim",
    "notify_settle",
    "notify_again",
    "move_tenant",
    "quarantine_keep",
    "quarantine_event",
    "quarantine_page",
    "quarantine_remove",
    "refused",
    "series_observe",
    "adopt",
)


WRAPPER = "local answer = script()\nflush()\nreturn answer\n"
_DECLARED = re.compile(r"^local (?:function )?([\w, ]+?)\s*[=(]")
_WORD = re.compile(r"[A-Za-z_]\w*")
_COMMENT_LINE = re.compile(r"^\s*--.*$", re.M)


def prelude_for(body: str, prelude: str) -> str:
    """The prelude's declarations that `body` uses, directly or through one another, in the
    prelude's order. Redis runs a script's whole text on every call: each function the prelude
    declares is made anew, and Lua's collector then frees it, at a cost that grows with every
    script loaded in Redis (bench/README.md, "Where the time goes"). A name is found by its
    word outside comment lines, so a trailing comment or a local of the same name can only
    bring in one declaration more, never leave one out."""
    blocks: list[tuple[list[str], str]] = []  # (names it declares, its text): comments go with the one above
    for line in prelude.splitlines(keepends=True):
        declared = _DECLARED.match(line)
        if declared:
            blocks.append(([name.strip() for name in declared.group(1).split(",")], line))
        elif blocks:
            blocks[-1] = (blocks[-1][0], blocks[-1][1] + line)
        else:
            blocks.append(([], line))  # the header's comments
    declared_in = {name: i for i, (names, _) in enumerate(blocks) for name in names}
    needed: set[int] = set()
    wanted = [declared_in[w] for w in _WORD.findall(_COMMENT_LINE.sub("", body)) if w in declared_in]
    while wanted:
        i = wanted.pop()
        if i not in needed:
            needed.add(i)
            code = _COMMENT_LINE.sub("", blocks[i][1])  # what a comment line names is not used
            wanted += [declared_in[w] for w in _WORD.findall(code) if w in declared_in]
    return "".join(text for i, (_, text) in enumerate(blocks) if i in needed)


@cache
def source(name: str) -> str:
    """The prelude's declarations the script needs (prelude_for), then the script as a
    function, whose changed records are written once it returns."""
    body = (LUA / f"{name}.lua").read_text()
    prelude = prelude_for(body + WRAPPER, (LUA / "prelude.lua").read_text())
    classes = ", ".join(f"'{c}'" for c in API_CLASSES)
    buckets = ", ".join(repr(b) for b in HISTOGRAM_BUCKETS["request"])
    return (
        f"local P = KEYS[1]\nlocal CLASSES = {{{classes}}}\n"
        f"local REQUEST_BUCKETS = {{{buckets}}}\nlocal REQUEST_HISTOGRAM = '{HISTOGRAM_PREFIX}request:'\n"
        f"{lua_definitions()}{series_definitions()}"
        f"{prelude}\n"
        f"local function script()\n{body}\nend\n"
        f"{WRAPPER}"
    )


WAIT_MS = 1000  # how long one attempt waits for replicas to confirm a write


class NotReplicated(ConnectionError):
    """Fewer replicas than asked confirmed a write: it could still be lost in a failover,
    so it is treated like an outage and tried again (the scripts are safe to repeat).
    `result` is what the script answered."""

    def __init__(self, result: object, replicas: int) -> None:
        super().__init__(f"only {replicas} replica(s) confirmed the write")
        self.result = result


class Scripts:
    """The scripts registered on one Redis connection; call them by name. `direct`: every
    call goes the way `once` does, for callers that budget their own retries in time."""

    def __init__(self, redis: Redis, direct: bool = False) -> None:
        self._redis = redis
        self._direct = direct
        self._scripts: dict[str, Script] = {n: redis.register_script(source(n)) for n in NAMES}

    def __call__(self, name: str, *args: ScriptArg, at: str = PREFIX) -> object:
        """Run a script in the partition whose key prefix is `at` (store/partitions.py)."""
        if self._direct:
            return self.once(name, *args, at=at)
        return self._scripts[name](keys=[at], args=list(args))

    def once(self, name: str, *args: ScriptArg, at: str = PREFIX) -> object:
        """Run a script once, on the client's own connection (a single-connection client's,
        as a worker's send thread holds) or one of its pool's, without redis-py's command
        machinery around it (store/redis_internals.evalsha): for callers that budget their
        own retries in time (store/connection.within: the webhook, the send threads). A script
        Redis has forgotten (a restart, a failover) is loaded again the usual way."""
        return self._run(name, at, args, retried=False)

    def retried(self, name: str, *args: ScriptArg, at: str = PREFIX) -> object:
        """Run a script as `__call__` does, retrying an outage (a failover, a restart) as the
        client's Retry says, on the same connection closed and opened again (with Sentinel:
        to the new primary), as redis-py does; otherwise as `once`, without redis-py's
        per-command machinery (web's submissions)."""
        return self._run(name, at, args, retried=True)

    def _run(self, name: str, at: str, args: tuple[ScriptArg, ...], retried: bool) -> object:
        script = self._scripts[name]
        try:
            return evalsha(self._redis, script.sha, at, args, retried)
        except NoScriptError:  # Redis forgot it (a restart, a failover): redis-py's Script loads it again
            return script(keys=[at], args=list(args))

    def each(self, name: str, calls: Sequence[tuple[str, Sequence[ScriptArg]]]) -> list[object]:
        """Run a script once per (prefix, args), each in its partition, in one round trip: a
        non-transactional pipeline (on a cluster redis-py splits it per node). A call whose
        script Redis has forgotten runs again alone, which loads it."""
        script = self._scripts[name]
        with self._redis.pipeline(transaction=False) as pipe:
            for at, args in calls:  # not pipe.evalsha, which a cluster's pipeline refuses: it routes by `at`
                pipe.execute_command("EVALSHA", script.sha, 1, at, *args)
            answers = pipe.execute(raise_on_error=False)
        for i, answer in enumerate(answers):
            if isinstance(answer, NoScriptError):
                answers[i] = script(keys=[calls[i][0]], args=list(calls[i][1]))
            elif isinstance(answer, Exception):
                raise answer
        return answers

    def replicated(self, min_replicas: int, name: str, *args: ScriptArg, at: str = PREFIX) -> object:
        """Run a script, then Redis WAIT for `min_replicas`, in one pipeline: WAIT counts the
        replicas that have everything up to its own connection's last write. A counter is
        written in between, because a script that finds its work already done (a repeated
        submission, a retried mark) writes nothing itself, and since Redis 7.2 (and in Valkey)
        a connection's last write is then an older one, which a lagging replica may have
        already: WAIT would answer at once and confirm nothing. After the counter it confirms
        everything the primary had by then, the earlier write this answer vouches for included."""
        if min_replicas <= 0:
            return self(name, *args, at=at)
        with one_node(self._redis, at) as node, node.pipeline(transaction=False) as pipe:  # on a cluster: at's node
            self._scripts[name](keys=[at], args=list(args), client=pipe)
            pipe.hincrby(keys.at(at, METRICS), "replication_waits", 1)
            pipe.wait(min_replicas, WAIT_MS)
            result, _, replicas = pipe.execute()
        if replicas < min_replicas:
            raise NotReplicated(result, replicas)
        return result
