"""receiver/auth.py: a bearer API key names its tenant; `name:key` entries let a tenant hold
two keys while one is rotated; anything else is a 401."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from receiver.auth import key_table, log_api_keys, tenant_of
from receiver.errors import Unauthorized

pytestmark = pytest.mark.fast

KEYS = ("solo-key", "acme:old-key", "acme:new-key", "other:new-key-2")
SALT = "ab" * 32  # a deployment's salt (store/tenants.py keeps it in Redis)


def tenants(entries=KEYS) -> SimpleNamespace:
    """What tenant_of reads of the web's services: the table built from its API_KEYS."""
    return SimpleNamespace(settings=SimpleNamespace(api_keys=entries), key_table=key_table(entries, SALT))


def test_a_named_tenants_keys_all_name_it_and_other_keys_their_own_tenant():
    svc = tenants()
    acme = tenant_of(svc, "Bearer old-key")
    assert tenant_of(svc, "bearer new-key") == acme
    assert len({acme, tenant_of(svc, "Bearer solo-key"), tenant_of(svc, "Bearer new-key-2")}) == 3


def test_keys_are_held_only_as_hashes():
    table = key_table(KEYS, SALT)
    assert not any(secret in repr(table) for secret in ("solo-key", "old-key", "new-key", "acme"))


def test_a_tenant_stays_the_same_when_its_key_changes_or_the_list_is_reordered():
    before = tenant_of(tenants(("acme:old-key",)), "Bearer old-key")
    assert tenant_of(tenants(("x", "acme:new-key")), "Bearer new-key") == before


@pytest.mark.parametrize(
    "header, message",
    [
        ("", "missing bearer API key"),
        ("Bearer ", "missing bearer API key"),
        ("Basic solo-key", "missing bearer API key"),
        ("Bearer solo", "invalid API key"),
        ("Bearer acme", "invalid API key"),
        ("Bearer acme:old-key", "invalid API key"),
    ],
)
def test_anything_but_a_known_bearer_key_is_unauthorized(header, message):
    with pytest.raises(Unauthorized, match=message):
        tenant_of(tenants(), header)


def test_a_key_listed_twice_leaves_no_alias_two_tenants_would_take():
    """Both tenants would move the key's unsalted id's requests to themselves, each taking some."""
    twice, once = key_table(("twice-listed-key", "acme:twice-listed-key", "other-key"), SALT)[1:]
    assert twice[1].aliases == () and len(once[1].aliases) == 1


def test_odd_entries_are_warned_about_at_start_by_position_and_no_key_is_logged(caplog):
    entries = ("acme:a-long-enough-key-1", "x:tiny9q", "same-key-twice-123", "beta:same-key-twice-123", "a b:c" * 5)
    with caplog.at_level(logging.INFO, logger="receiver.auth"):
        log_api_keys(entries)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split(" is read")[0].split(" hold")[0] for w in warnings] == [
        "API_KEYS entry 2",
        "API_KEYS entries 3 and 4",
        "API_KEYS entry 5",
    ]
    assert "serving 5 API keys: 1 of unnamed tenants, named tenants: acme, beta" in caplog.text
    assert not any(part in caplog.text for part in ("a-long-enough", "tiny9q", "same-key", "a b", "c a"))
