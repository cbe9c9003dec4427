"""HTTP app mounted by ``langgraph.postgres.json`` (``"http": {"app": ...}``).

It adds ``GET /ready`` and, more importantly, a lifespan that drains runs.

Shutdown order in the LangGraph server (langgraph dev and deployments):

1. uvicorn stops accepting connections and waits for open ones to close.
2. This app's lifespan exits first, while runs are still executing. It waits
   up to ``SHUTDOWN_GRACE`` seconds for the runs that
   ``agent.graph_factory.make_graph`` tracks in ``agent.inflight``.
3. The server stops its run queue. The in-memory runtime cancels runs still
   going at once and waits up to 5 s for them to unwind; a cancelled run
   still writes a final checkpoint while unwinding.
4. The custom checkpointer context (``agent.checkpointer.postgres_checkpointer``)
   exits and closes the pool.

Step 2 finishes before step 4 starts, so a run that ends within the grace
period writes its last checkpoint through an open pool. Keep
``SHUTDOWN_GRACE`` below your platform's kill timeout (Kubernetes
``terminationGracePeriodSeconds``, 30 s by default) minus a few seconds.

Environment:

- ``SHUTDOWN_GRACE``: seconds to wait for in-flight runs on shutdown (10).
- ``READY_TIMEOUT``: seconds ``/ready`` waits for ``SELECT 1`` (2).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent import inflight
from agent.checkpointer import ping, serving_pool

__all__ = ["app"]

logger = logging.getLogger("agent.webapp")


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {raw!r}")
    return value


# Read at import, not on the event loop. (No dataclass here: the server
# imports this file without registering it in sys.modules, which dataclasses
# with postponed annotations cannot cope with.)
SHUTDOWN_GRACE = _seconds("SHUTDOWN_GRACE", 10.0)
READY_TIMEOUT = _seconds("READY_TIMEOUT", 2.0)


async def ready(request: Request) -> JSONResponse:
    """200 when this process can serve runs: not draining, database answering."""
    if request.app.state.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    pool = serving_pool()
    if pool is None:
        # Mounted without the Postgres checkpointer: nothing more to check.
        return JSONResponse({"status": "ok", "database": "not configured"})
    started = time.perf_counter()
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await ping(pool)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        logger.warning("readiness check failed: %s", type(exc).__name__)
        return JSONResponse(
            {"status": "unavailable", "database": type(exc).__name__}, status_code=503
        )
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    return JSONResponse({"status": "ok", "database": "ok", "latency_ms": latency_ms})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.draining = False
    yield
    app.state.draining = True
    running = inflight.active()
    if not running:
        return
    logger.info(
        "shutdown: waiting up to %.1fs for %d run(s) in flight: %s",
        SHUTDOWN_GRACE,
        len(running),
        ", ".join(running),
    )
    started = time.perf_counter()
    if await inflight.wait_idle(SHUTDOWN_GRACE):
        logger.info("shutdown: runs finished in %.2fs", time.perf_counter() - started)
    else:
        logger.warning(
            "shutdown: %d run(s) still running after %.1fs; the server will cancel them: %s",
            len(inflight.active()),
            SHUTDOWN_GRACE,
            ", ".join(inflight.active()),
        )


app = Starlette(routes=[Route("/ready", ready, methods=["GET"])], lifespan=lifespan)
