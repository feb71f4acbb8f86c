"""Who is calling, by network address: the peer, or the client a trusted proxy names.

``X-Forwarded-For`` is believed only when the peer is one of ``trusted_proxies``; then the
right-most address that is not itself a trusted proxy is the client (each proxy appends the
address it saw, so everything left of that could have been written by the client).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip()]


def _trusted(address: str, proxies: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_address(peer: str | None, headers: Mapping[str, str], proxies: list[Network]) -> str:
    """The caller's address as far as it can be trusted (``unknown`` without a peer)."""
    address = peer or "unknown"
    if not proxies or not _trusted(address, proxies):
        return address
    forwarded = [a.strip() for a in headers.get("x-forwarded-for", "").split(",") if a.strip()]
    for hop in reversed(forwarded):
        if not _trusted(hop, proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return address  # garbage in the header: fall back to the proxy itself
    return address
