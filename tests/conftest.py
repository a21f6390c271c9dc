"""The index of what every test can use. Fixtures live in tests/support/ and are registered
here as plugins; a test module imports helpers from tests/support/ and never from another
test module.

  tests/support/services.py  session services (redis_server, redis, sandbox, web, worker,
                             api, api_b), `make_stack` for a web and workers on a database of
                             their own, and `clean_state`, which resets Redis and the sandbox
                             before every test
  tests/support/fuzz_state.py  fresh in-process apps for every fuzz example (fuzz_env,
                             seeded, callback_env)
  tests/support/cluster.py   the session's Redis Cluster (3 primaries, 3 replicas):
                             `redis_cluster`, whole and empty for each test
  tests/support/memory.py    the memory cap of `manage.py test`, and the run's high-water
                             marks in the terminal summary
"""

from __future__ import annotations

from hypothesis.internal.conjecture import engine as hypothesis_engine

pytest_plugins = [
    "tests.support.memory",
    "tests.support.services",
    "tests.support.fuzz_state",
    "tests.support.cluster",
]

# Shrinking is bounded for every property: at most this many successful shrinks and this
# long in all (Hypothesis's defaults are 500 and 300 s, the whole of the per-test timeout).
# The engine documents these two constants as the ones to monkeypatch; there is no setting.
hypothesis_engine.MAX_SHRINKS = 200
hypothesis_engine.MAX_SHRINKING_SECONDS = 60
