"""Guarded async HTTP GET, shared by the fetch tool and URL prompt sources.

One ``httpx.AsyncClient`` per event loop (see ``loop_local``). Every hop,
redirects included, is checked by the SSRF guard and then connected to the
checked IP address, with Host and TLS SNI set to the original host name.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from agent.loop_local import LoopLocal
from agent.ssrf import Destination, FetchRefused, check_url

MAX_REDIRECTS = 3
USER_AGENT = "async-safe-langgraph-agent/0.1"


class FetchFailed(RuntimeError):
    """The fetch was allowed but did not succeed (timeout, HTTP error, too large)."""


@dataclass(frozen=True)
class FetchResult:
    url: str
    status_code: int
    content_type: str
    text: str
    truncated: bool


def _build_client() -> httpx.AsyncClient:
    # Redirects are followed by hand so that each hop is checked.
    return httpx.AsyncClient(
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )


_clients: LoopLocal[httpx.AsyncClient] = LoopLocal(_build_client)


async def shared_client() -> httpx.AsyncClient:
    """This loop's HTTP client."""
    return await _clients.get()


def _pinned_request(client: httpx.AsyncClient, url: str, destination: Destination) -> httpx.Request:
    address = destination.addresses[0]
    host_literal = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    parts = urlsplit(url)
    pinned = urlunsplit(
        (parts.scheme, f"{host_literal}:{destination.port}", parts.path or "/", parts.query, "")
    )
    default_port = 443 if destination.scheme == "https" else 80
    host_header = (
        destination.host
        if destination.port == default_port
        else f"{destination.host}:{destination.port}"
    )
    extensions = {"sni_hostname": destination.host} if destination.scheme == "https" else {}
    return client.build_request("GET", pinned, headers={"Host": host_header}, extensions=extensions)


async def guarded_get(
    url: str,
    *,
    allowlist: Sequence[str],
    max_bytes: int,
    timeout_s: float,
) -> FetchResult:
    """GET ``url`` within one total time limit, reading at most ``max_bytes``.

    Raises FetchRefused for disallowed destinations and FetchFailed otherwise.
    """
    client = await shared_client()
    try:
        async with asyncio.timeout(timeout_s):
            for _ in range(MAX_REDIRECTS + 1):
                destination = await check_url(url, allowlist)
                request = _pinned_request(client, url, destination)
                response = await client.send(request, stream=True)
                try:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    return await _read_capped(url, response, max_bytes)
                finally:
                    await response.aclose()
            raise FetchFailed(f"Too many redirects (more than {MAX_REDIRECTS}) from {url}.")
    except TimeoutError as error:
        raise FetchFailed(f"Fetching {url} took longer than {timeout_s:g} s.") from error
    except httpx.HTTPError as error:
        raise FetchFailed(f"Fetching {url} failed: {type(error).__name__}: {error}") from error


async def _read_capped(url: str, response: httpx.Response, max_bytes: int) -> FetchResult:
    if response.status_code >= 400:
        raise FetchFailed(f"{url} answered HTTP {response.status_code}.")
    body = bytearray()
    truncated = False
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > max_bytes:
            del body[max_bytes:]
            truncated = True
            break
    encoding = response.charset_encoding or "utf-8"
    return FetchResult(
        url=url,
        status_code=response.status_code,
        content_type=response.headers.get("content-type", ""),
        text=body.decode(encoding, errors="replace"),
        truncated=truncated,
    )


__all__ = ["FetchFailed", "FetchRefused", "FetchResult", "guarded_get", "shared_client"]
