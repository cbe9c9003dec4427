"""A TCP proxy that delays every chunk by ``--delay-ms`` in each direction.

With 1 ms each way, PostgreSQL behind it has a 2 ms round trip, like a database
in the same region but not on the same host. Run it as its own process so its
work never steals time from the loop being measured:

    python -m bench.proxy --target 127.0.0.1:5432 --delay-ms 1   # prints its port
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket

import uvloop

CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer; each chunk leaves ``delay`` seconds after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def deliver() -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(CHUNK):
            queue.put_nowait((loop.time() + delay, data))
    finally:
        queue.put_nowait(None)
        with contextlib.suppress(ConnectionError, OSError):
            await sender


async def _handle(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
    delay: float,
) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    for writer in (client_writer, server_writer):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with contextlib.suppress(ConnectionError, OSError):
        await asyncio.gather(
            _pipe(client_reader, server_writer, delay),
            _pipe(server_reader, client_writer, delay),
        )
    client_writer.close()
    server_writer.close()


async def main(target: tuple[str, int], delay_ms: float, port: int) -> None:
    delay = delay_ms / 1000

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle(reader, writer, target, delay)

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="delay per direction")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    host, _, target_port = args.target.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main((host, int(target_port)), args.delay_ms, args.port))
