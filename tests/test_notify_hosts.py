"""NOTIFY_HOSTS: which notify_urls are taken at submission, and which addresses a
notification may connect to at send time (no network is contacted here)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from config import ConfigError, Settings
from notify_hosts import HostPolicy, NotAllowed
from workers.notifying import next_delay

pytestmark = pytest.mark.fast

POLICY = HostPolicy.parse(
    ("hooks.example.com", "api.example.org:8443", "*.example.net", "127.0.0.1", "[::1]:9000", "10.1.0.0/16")
)


@pytest.mark.parametrize(
    "url, authority",
    [
        ("https://hooks.example.com/n?x=1", "hooks.example.com:443"),
        ("http://HOOKS.example.com.:8080/", "hooks.example.com:8080"),
        ("https://api.example.org:8443/", "api.example.org:8443"),
        ("https://a.b.example.net/", "a.b.example.net:443"),
        ("http://127.0.0.1:5000/", "127.0.0.1:5000"),
        ("http://[::1]:9000/", "[::1]:9000"),
        ("http://10.1.2.3/", "10.1.2.3:80"),
    ],
)
def test_listed_hosts_are_taken(url, authority):
    assert POLICY.check_url(url).authority == authority


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.invalid/",
        "https://example.net/",
        "https://api.example.org/",
        "http://[::1]:9001/",
        "http://10.2.0.1/",
        "http://127.0.0.2/",
        "http://2130706433/",
        "file:///etc/passwd",
        "gopher://hooks.example.com/",
        "https://user@hooks.example.com/",
        "https://hooks.example.com:0x50/",
        "https://hooks.example.com\\@evil.invalid/",
        "https://hooks.example.com /",
        "https://" + "a" * 2100 + ".example.net/",
    ],
)
def test_other_urls_are_refused(url):
    with pytest.raises(NotAllowed):
        POLICY.check_url(url)


def test_nothing_is_allowed_when_notify_hosts_is_empty():
    with pytest.raises(NotAllowed, match="off"):
        HostPolicy.parse(()).check_url("https://hooks.example.com/")


@pytest.mark.parametrize(
    "address, allowed",
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", True),
        ("10.1.9.9", True),  # listed
        ("127.0.0.2", False),
        ("10.2.0.1", False),
        ("192.168.1.1", False),
        ("172.16.0.1", False),
        ("169.254.169.254", False),
        ("fd00:ec2::254", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.2", False),
        ("0.0.0.0", False),
        ("100.64.0.1", False),
        ("224.0.0.1", False),
    ],
)
def test_send_time_addresses_must_be_public_or_listed(address, allowed):
    assert POLICY.address_allowed(ipaddress.ip_address(address), 443) is allowed


def test_a_listed_address_with_a_port_allows_only_that_port():
    assert POLICY.address_allowed(ipaddress.ip_address("::1"), 9000)
    assert not POLICY.address_allowed(ipaddress.ip_address("::1"), 9001)


def test_an_address_in_the_url_is_checked_without_a_lookup():
    target, ip = POLICY.resolve("http://127.0.0.1:5000/x")
    assert ip == ipaddress.ip_address("127.0.0.1") and target.port == 5000


@pytest.mark.parametrize(
    "env, message",
    [
        ({"NOTIFY_HOSTS": "hooks.example.com"}, "WEBHOOK_SECRET is required"),
        ({"NOTIFY_HOSTS": "hooks.example.com", "WEBHOOK_SECRET": "not-a-whsec"}, "whsec_"),
        ({"NOTIFY_HOSTS": "http://hooks.example.com", "WEBHOOK_SECRET": "whsec_c2VjcmV0"}, "NOTIFY_HOSTS entry"),
        ({"NOTIFY_HOSTS": "hooks.example.com:99999", "WEBHOOK_SECRET": "whsec_c2VjcmV0"}, "bad port"),
        ({"NOTIFY_SCHEDULE": "5,soon"}, "NOTIFY_SCHEDULE"),
        ({"NOTIFY_SCHEDULE": "5,-1"}, "NOTIFY_SCHEDULE"),
        ({"NOTIFY_TIMEOUT": "0"}, "NOTIFY_TIMEOUT"),
    ],
)
def test_bad_notification_settings_stop_start_up(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_settings_read_every_secret_and_the_schedule():
    settings = Settings.from_env(
        {
            "NOTIFY_HOSTS": "a.example.com, *.example.net",
            "WEBHOOK_SECRET": "whsec_c2VjcmV0, whsec_b3RoZXI=",
            "NOTIFY_SCHEDULE": "1,2.5",
        }
    )
    assert settings.notify_hosts == ("a.example.com", "*.example.net")
    assert settings.webhook_secrets == ("whsec_c2VjcmV0", "whsec_b3RoZXI=")
    assert settings.notify_schedule == (1.0, 2.5)
    assert "whsec" not in repr(settings)


def test_retry_delays_follow_the_schedule_with_jitter_and_retry_after_then_stop():
    rng = random.Random(7)
    schedule = (5.0, 300.0)
    assert 4.5 <= next_delay(schedule, 1, None, rng) <= 5.5
    assert 270 <= next_delay(schedule, 2, None, rng) <= 330
    assert next_delay(schedule, 1, "60", rng) == 60
    assert next_delay(schedule, 3, None, rng) is None
