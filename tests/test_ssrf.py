"""The SSRF guard decides on resolved addresses and checks every redirect hop."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from agent.ssrf import FetchRefused, check_url, is_public
from agent.web import FetchFailed, guarded_get
from tests.support.pages import PageServer, TlsPageServer


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.100.100.200",  # carrier-grade NAT range, Alibaba metadata
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fd00:ec2::254",  # AWS metadata over IPv6
        "fe80::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:169.254.169.254",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8080/x",  # a name that resolves to loopback
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://2130706433/",  # 127.0.0.1 written as an integer
        "http://0x7f.0.0.1/",
    ],
)
async def test_refuses_internal_destinations(url: str) -> None:
    with pytest.raises(FetchRefused):
        await check_url(url, allowlist=[])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "Only http and https"),
        ("gopher://example.com/", "Only http and https"),
        ("http://user:pw@example.com/", "credentials"),
        ("http:///nohost", "no host"),
    ],
)
async def test_refuses_malformed_urls(url: str, reason: str) -> None:
    with pytest.raises(FetchRefused, match=reason):
        await check_url(url, allowlist=[])


async def test_allowlist_by_cidr_and_by_host() -> None:
    by_cidr = await check_url("http://127.0.0.1:9/", allowlist=["127.0.0.0/8"])
    assert by_cidr.addresses == (ipaddress.ip_address("127.0.0.1"),)
    await check_url("http://localhost:9/", allowlist=["localhost"])
    with pytest.raises(FetchRefused):
        await check_url("http://127.0.0.2/", allowlist=["localhost"])


async def test_redirect_to_metadata_is_refused(page_server: PageServer) -> None:
    url = f"{page_server.url}/redirect?to=http://169.254.169.254/latest/meta-data/"
    with pytest.raises(FetchRefused, match="169.254.169.254"):
        await guarded_get(url, allowlist=["127.0.0.1"], max_bytes=1000, timeout_s=5)


async def test_redirect_within_the_allowlist_is_followed(page_server: PageServer) -> None:
    url = f"{page_server.url}/redirect?to=/hello"
    result = await guarded_get(url, allowlist=["127.0.0.1"], max_bytes=1000, timeout_s=5)
    assert result.text == "hello from the page server"
    assert result.url.endswith("/hello")


async def test_pinned_connection_keeps_the_host_header(page_server: PageServer) -> None:
    url = f"http://localhost:{page_server.port}/host"
    result = await guarded_get(url, allowlist=["localhost"], max_bytes=1000, timeout_s=5)
    assert result.text == f"localhost:{page_server.port}"


def test_pinned_https_still_verifies_the_host_name(
    tls_page_server: TlsPageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """We connect to the checked IP, but TLS must still verify the URL's host name.

    The certificate names only ``localhost``. Pinning sends SNI and checks the
    certificate against ``localhost`` (the request host), not ``127.0.0.1``.
    A fresh event loop builds a fresh client that trusts the test CA.
    """
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_page_server.ca_file))
    port = tls_page_server.port

    async def fetch(url: str) -> str:
        result = await guarded_get(url, allowlist=["127.0.0.1"], max_bytes=1000, timeout_s=5)
        return result.text

    assert asyncio.run(fetch(f"https://localhost:{port}/hello")) == "hello from the page server"
    # The same server reached by IP fails verification: the certificate has no IP.
    with pytest.raises(FetchFailed, match="CERTIFICATE_VERIFY_FAILED|certificate"):
        asyncio.run(fetch(f"https://127.0.0.1:{port}/hello"))
