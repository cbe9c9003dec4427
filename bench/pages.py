"""A tiny keep-alive HTTP/1.1 page server, run as its own process.

It stands in for the remote web pages the agent fetches (the system prompt and
the tool's page), so its CPU never shares a loop or a GIL with what is measured.

    python -m bench.pages --port 0   # prints the chosen port on stdout, then serves
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

PAGES: dict[str, bytes] = {
    "/prompt": b"You are a benchmark agent. Answer briefly.",
    "/page": b"bench page: the answer is 42.",
}


def _response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode(errors="replace").split("?", 1)[0]
            body = PAGES.get(path)
            writer.write(_response("200 OK", body) if body else _response("404 Not Found", b""))
            await writer.drain()
            if b"connection: close" in head.lower():
                break
    writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args().port))
    sys.exit(0)
