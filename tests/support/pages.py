"""A tiny HTTP server on 127.0.0.1 that the fetch tool and URL prompts can hit.

It runs on plain threads (no event loop), so the blocking detector rightly
ignores it: it stands in for a remote web server.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.tls import localhost_cert

PROMPT_TEXT = "You are the prompt served over HTTP."
# Requests served per path; tests read it to see whether something was re-fetched.
hits: Counter[str] = Counter()
BIG_SIZE = 1_000_000


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        hits[parts.path] += 1
        query = parse_qs(parts.query)
        if parts.path == "/hello":
            self._send(200, b"hello from the page server", "text/plain; charset=utf-8")
        elif parts.path == "/prompt":
            time.sleep(float(query.get("delay", ["0"])[0]))
            self._send(200, PROMPT_TEXT.encode(), "text/plain; charset=utf-8")
        elif parts.path == "/big":
            self._send(200, b"x" * BIG_SIZE, "text/plain")
        elif parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/slow":
            time.sleep(float(query.get("s", ["5"])[0]))
            self._send(200, b"finally", "text/plain")
        elif parts.path == "/host":
            self._send(200, (self.headers.get("Host") or "").encode(), "text/plain")
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass(frozen=True)
class PageServer:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class TlsPageServer:
    port: int
    ca_file: Path


@pytest.fixture(scope="session")
def page_server() -> Iterator[PageServer]:
    yield from _serve()


@pytest.fixture(scope="session")
def tls_page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPageServer]:
    """HTTPS on 127.0.0.1 with a certificate valid for the name ``localhost`` only."""
    files = localhost_cert(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    for server in _serve(context):
        yield TlsPageServer(port=server.port, ca_file=files.cert)


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[PageServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield PageServer(port=server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
