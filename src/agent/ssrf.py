"""Server-side request forgery guard: decide whether a URL may be fetched.

The decision is made on the *resolved* IP addresses, because a public-looking
hostname can resolve to 127.0.0.1 or to a cloud metadata address. Callers then
connect to the checked address, so DNS cannot change the answer in between.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchRefused(ValueError):
    """The URL is not allowed; the message says why and how to allow it."""


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def is_public(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses.

    ``is_global`` excludes loopback, private, link-local (169.254.169.254, the
    metadata service), carrier-grade NAT (100.64/10, used by some metadata
    services), unique-local IPv6 (fd00:ec2::254) and reserved ranges.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


def _allowed_by_list(host: str, address: IPAddress, allowlist: Iterable[str]) -> bool:
    for entry in allowlist:
        entry = entry.strip().lower()
        if not entry:
            continue
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            if host.lower().rstrip(".") == entry.rstrip("."):
                return True
    return False


def parse_url(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of an http(s) URL, or FetchRefused with the reason."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"Only http and https URLs can be fetched, not {url!r}.")
    if parts.username or parts.password:
        raise FetchRefused("URLs with credentials in them are refused.")
    if not parts.hostname:
        raise FetchRefused(f"The URL {url!r} has no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise FetchRefused(f"The URL {url!r} has an invalid port.") from error
    return parts.scheme, parts.hostname, port


async def resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    """All addresses for host, resolved without blocking the loop."""
    try:
        return (ipaddress.ip_address(host),)
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise FetchRefused(f"Cannot resolve host {host!r}: {error.strerror}.") from error
    addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    return tuple(sorted(addresses, key=lambda a: (a.version, int(a))))


async def check_url(url: str, allowlist: Sequence[str]) -> Destination:
    """Resolve the URL's host and refuse it unless every address is allowed."""
    scheme, host, port = parse_url(url)
    addresses = await resolve(host, port)
    for address in addresses:
        if not is_public(address) and not _allowed_by_list(host, address, allowlist):
            raise FetchRefused(
                f"Refusing to fetch {host!r}: it resolves to {address}, which is not a "
                "public address (loopback, private, link-local or metadata). Add the host "
                "or a CIDR range to the context's fetch_allowlist to permit it."
            )
    return Destination(scheme=scheme, host=host, port=port, addresses=addresses)
