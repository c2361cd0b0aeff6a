"""Which Host names the server answers to, and which Origins may change things.

A DNS-rebinding page reaches a server on localhost under the attacker's own name, so its
requests carry a matching Host and Origin; only a list of names the operator chose tells
them apart. So the Host header is checked against that list (TrustedHostMiddleware), and an
Origin is compared with the list, never with the request's own Host.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# Binds that name no host: the operator must say which names the public reaches it by.
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})


def default_allowed_hosts(bind: str) -> list[str]:
    """The loopback names, and the bind address when it is one particular address."""
    hosts = list(LOOPBACK_HOSTS)
    bind = bind.strip().lower()
    if ":" in bind and not bind.startswith("["):  # an IPv6 address, as Host spells it
        bind = f"[{bind}]"
    if bind not in WILDCARD_BINDS and bind not in hosts:
        hosts.append(bind)
    return hosts


def host_matches(host: str, patterns: Sequence[str]) -> bool:
    """`host` (no port) against names and `*.domain` patterns, as TrustedHostMiddleware does."""
    host = host.lower()
    for pattern in patterns:
        pattern = pattern.lower()
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def origin_allowed(
    origin: str, allowed_hosts: Sequence[str], allowed_origins: Sequence[str], own_host: str
) -> bool:
    """An Origin on one of the allowed hosts (any port), or one of the allowed origins.

    Only where the operator turned the Host check off ("*") is the request's own Host the
    measure, as before: that setting is for a proxy in front that checks Host itself."""
    if origin in allowed_origins:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    if "*" in allowed_hosts:
        return parts.netloc.lower() == own_host.lower()
    name = parts.hostname or ""
    if ":" in name:
        name = f"[{name}]"
    return host_matches(name, allowed_hosts)
