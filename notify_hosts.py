"""Where notifications may go (NOTIFY_HOSTS), checked twice against SSRF.

At submission the notify_url itself: http or https, no user info, a host that
NOTIFY_HOSTS lists (`host`, `host:port`, `*.example.com[:port]`, an IP address
`127.0.0.1[:port]` / `[::1]:port`, or a network `10.0.0.0/8`). At send time the
address the name resolves to: it must be public (globally routable), or inside
an address or network that NOTIFY_HOSTS lists. So a listed name whose DNS
points (or is re-pointed) at a loopback, private, link-local or cloud-metadata
address (169.254.169.254) is refused unless the operator listed that address;
and the connection goes to the address that was checked, never to a second
lookup (no DNS rebinding between check and connect).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")
MAX_URL = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}


class NotAllowed(ValueError):
    """A notify_url or an address that notifications may not go to."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # lower-case name or IP text, no brackets
    port: int
    ip: IPAddress | None  # set when the URL names an address, not a name

    @property
    def authority(self) -> str:
        """host:port, the unit of per-host concurrency."""
        return f"[{self.host}]:{self.port}" if self.ip and self.ip.version == 6 else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Rule:
    name: str = ""  # exact name, or "*.suffix"
    port: int | None = None
    network: IPNetwork | None = None

    def allows(self, target: Target) -> bool:
        if self.port is not None and self.port != target.port:
            return False
        if target.ip is not None:
            return self.network is not None and target.ip in self.network
        if self.name.startswith("*."):
            return target.host.endswith(self.name[1:])
        return self.name == target.host


def parse_rule(entry: str) -> Rule:
    text = entry.strip().lower().rstrip(".")
    try:
        if "/" in text:
            return Rule(network=ipaddress.ip_network(text, strict=False))
        return Rule(network=ipaddress.ip_network(text))
    except ValueError:
        pass
    host, port = _split_port(text)
    try:
        return Rule(network=ipaddress.ip_network(host), port=port)
    except ValueError:
        pass
    if not HOSTNAME.match(host):
        raise ValueError(f"NOTIFY_HOSTS entry {entry!r} is not host, host:port, *.domain, an address or a network")
    return Rule(name=host, port=port)


def _split_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"NOTIFY_HOSTS entry {text!r} has a bad port")
    return host, int(port) if port else None


@dataclass(frozen=True)
class HostPolicy:
    rules: tuple[Rule, ...]

    @classmethod
    def parse(cls, entries: tuple[str, ...]) -> HostPolicy:
        return cls(tuple(parse_rule(e) for e in entries))

    @property
    def enabled(self) -> bool:
        return bool(self.rules)

    def check_url(self, url: str) -> Target:
        """The notify_url's target, if NOTIFY_HOSTS lets notifications go there."""
        if not self.enabled:
            raise NotAllowed("notifications are off (NOTIFY_HOSTS is empty)")
        target = _target(url)
        if not any(rule.allows(target) for rule in self.rules):
            raise NotAllowed(f"host {target.authority} is not in NOTIFY_HOSTS")
        return target

    def address_allowed(self, ip: IPAddress, port: int) -> bool:
        listed = any(r.network is not None and ip in r.network and r.port in (None, port) for r in self.rules)
        return listed or (ip.is_global and not ip.is_multicast)

    def resolve(self, url: str) -> tuple[Target, IPAddress]:
        """The address to connect to, checked now (DNS may have changed since submission).
        Raises NotAllowed, or OSError when the name does not resolve (worth a retry)."""
        target = self.check_url(url)
        if target.ip is not None:
            candidates = [target.ip]
        else:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            # an IPv4 or IPv6 address is a string (an IPv6 one may end in a %zone)
            candidates = [ipaddress.ip_address(cast(str, info[4][0]).split("%")[0]) for info in infos]
        for ip in candidates:
            if self.address_allowed(ip, target.port):
                return target, ip
        raise NotAllowed(f"{target.host} resolves to no address that is public or listed in NOTIFY_HOSTS")


def _target(url: str) -> Target:
    if len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 or c == "\\" for c in url):
        raise NotAllowed(f"notify_url must be an http(s) URL of at most {MAX_URL} characters, without spaces")
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise NotAllowed("notify_url must be an http or https URL with a host")
    if parts.username is not None or parts.password is not None:
        raise NotAllowed("notify_url must not carry a user name or password")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise NotAllowed("notify_url has a bad port") from None
    host = parts.hostname.rstrip(".")
    try:
        ip: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
        if not HOSTNAME.match(host) or host.startswith("*."):
            raise NotAllowed("notify_url has a bad host name") from None
    return Target(parts.scheme, host, port, ip)
