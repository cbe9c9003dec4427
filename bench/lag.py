"""Event-loop lag probe: a task that sleeps 10 ms and records how late it wakes.

Every overshoot is time the loop spent on something else (blocking calls,
long callbacks, CPU). Run it IN the process being measured:

- in-process benchmarks call ``LagProbe.start()`` on their own loop;
- ``langgraph dev`` loads :data:`app` (see ``bench/dev_app.py``) through the
  ``http.app`` key of a bench-only config; its lifespan starts the probe and
  ``GET /bench/lag`` returns (and with ``?reset=1`` clears) the samples.

No dataclasses here: the LangGraph server imports ``http.app`` files by path
without registering them in ``sys.modules``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.stats import summary_ms

INTERVAL_S = 0.010
MAX_SAMPLES = 200_000


class LagProbe:
    """Sleeps ``interval`` seconds in a loop; each wake-up's overshoot is one sample."""

    def __init__(self, interval: float = INTERVAL_S) -> None:
        self.interval = interval
        self._samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lag-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def reset(self) -> None:
        self._samples = []

    def summary(self) -> dict[str, float]:
        return summary_ms(self._samples)

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            overshoot = time.perf_counter() - before - self.interval
            if len(self._samples) < MAX_SAMPLES:
                self._samples.append(max(0.0, overshoot))


def create_app() -> Starlette:
    """A Starlette app whose lifespan runs a probe on the server's own loop."""
    probe = LagProbe()

    async def lag(request: Request) -> JSONResponse:
        body: dict[str, Any] = probe.summary()
        if request.query_params.get("reset"):
            probe.reset()
        return JSONResponse(body)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        probe.start()
        try:
            yield
        finally:
            await probe.stop()

    return Starlette(routes=[Route("/bench/lag", lag, methods=["GET"])], lifespan=lifespan)
