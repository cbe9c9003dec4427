"""``python -m agent serve --host 127.0.0.1 --port 8123``: the self-hosted server.

Shutdown on SIGTERM or Ctrl+C, against one deadline (``SHUTDOWN_TIMEOUT``):

1. the signal starts the run drain at once (uvicorn would otherwise first wait
   for open connections, and runs.wait/stream requests stay open as long as
   their runs do);
2. uvicorn stops accepting connections and waits for open ones, which end as
   their runs end; SSE streams are cut after ``timeout_graceful_shutdown``;
3. the services' exit stack finishes the drain, shuts the saver gate and
   closes the pool.

A second signal does not skip steps 2-3 (uvicorn's "force exit"): the drain is
already bounded, and skipping it is how a pool gets closed under a run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from types import FrameType
from typing import Any

import uvicorn

from agent.checkpointer import DatabaseUnavailable
from agent.runs import RunRegistry, ShutdownPolicy

log = logging.getLogger("agent.serve")


class DrainingServer(uvicorn.Server):
    """uvicorn, but a shutdown signal starts the run drain immediately."""

    def __init__(self, config: uvicorn.Config, registry: RunRegistry) -> None:
        super().__init__(config)
        self.registry = registry
        self.loop = asyncio.get_running_loop()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the signal handler, on the loop's thread but outside the loop.
        name = signal.Signals(sig).name
        if self.should_exit:
            log.warning("%s again: shutdown already in progress, still draining", name)
            return
        log.info("%s received: draining runs, then shutting down", name)
        self.should_exit = True
        self.loop.call_soon_threadsafe(self.registry.begin_drain)


async def serve(host: str, port: int, *, access_log: bool) -> None:
    # Imported here so a bad setting read at import is reported like any other.
    from agent.server import create_app, open_services

    policy = ShutdownPolicy.from_env()
    async with open_services(policy) as services:
        config = uvicorn.Config(
            create_app(services),
            host=host,
            port=port,
            # The services' lifetime is managed here, around the server.
            lifespan="off",
            log_config=None,
            access_log=access_log,
            # Requests waiting on runs end when the drain ends their runs; this
            # only cuts what is left (e.g. a stream of a finished run's client).
            # (uvicorn types it int, but only hands it to asyncio.wait_for.)
            timeout_graceful_shutdown=max(0.5, policy.drain_budget),  # type: ignore[arg-type]
        )
        server = DrainingServer(config, services.registry)
        # Installed before uvicorn's own handlers, which restore these when serve()
        # returns: signals during the rest of the drain must still land in
        # handle_exit, not kill the process half way through it.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, server.handle_exit)
        await server.serve()


def run_bounded(main: Coroutine[Any, Any, None], *, leftovers_timeout: float = 1.0) -> None:
    """``asyncio.run``, except that tasks still alive when ``main`` returns get a
    bounded time to react to cancellation. ``asyncio.run`` waits for them without a
    limit, so one run that swallows cancellation would keep the process alive
    forever after the drain abandoned it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        try:
            _cancel_leftovers(loop, leftovers_timeout)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in leftovers:
        task.cancel()
    if not leftovers:
        return
    _done, stuck = loop.run_until_complete(asyncio.wait(leftovers, timeout=timeout))
    if stuck:
        names = ", ".join(sorted(task.get_name() for task in stuck))
        log.error("exiting with %d task(s) that ignore cancellation: %s", len(stuck), names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the self-hosted LangGraph-compatible API")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8123)
    serve_cmd.add_argument("--log-level", default="INFO")
    serve_cmd.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The pool retries while it waits at startup; our DatabaseUnavailable line
    # says it once, with the reason.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    # One line per model request drowns the shutdown story; opt in with --log-level DEBUG.
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        run_bounded(serve(args.host, args.port, access_log=args.access_log))
    except (DatabaseUnavailable, ValueError) as exc:  # ValueError: settings from the env
        log.error("cannot start: %s", exc)  # noqa: TRY400 - one line, no traceback wall
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
