"""Runs executing in this process, so shutdown can wait for them to finish.

``graph_factory.make_graph`` wraps every real run in :func:`track`; the HTTP
app's lifespan calls :func:`wait_idle` on shutdown, before the server cancels
runs and closes the database pool (see ``agent.webapp``).

Runs may execute on more than one event loop (``BG_JOB_ISOLATED_LOOPS``), so
the tracker holds no loop-bound primitives: a dict whose single-key updates
are atomic under the GIL, and a waiter that polls it. A 50 ms poll costs
nothing next to a shutdown grace period measured in seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["RunTracker", "active", "track", "tracker", "wait_idle"]

POLL_INTERVAL = 0.05


class RunTracker:
    """Counts runs in flight; lets shutdown wait until there are none."""

    def __init__(self) -> None:
        self._runs: dict[object, str] = {}

    @asynccontextmanager
    async def track(self, label: str = "run") -> AsyncIterator[None]:
        """Count the enclosed block as one run in flight."""
        token = object()
        self._runs[token] = label
        try:
            yield
        finally:
            self._runs.pop(token, None)

    def active(self) -> list[str]:
        """Labels (run ids) of the runs in flight right now."""
        return list(self._runs.values())

    async def wait_idle(self, timeout: float) -> bool:  # noqa: ASYNC109 - a drain deadline is the point
        """Wait until no run is in flight, at most ``timeout`` seconds.

        Returns ``True`` if idle, ``False`` if runs were still going at the
        deadline. Never raises on timeout: shutdown carries on either way.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while self._runs:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(POLL_INTERVAL, remaining))
        return True


tracker = RunTracker()
"""The process-wide tracker. Import it as ``agent.inflight``, never by file
path, so every module that langgraph loads shares this one instance."""

track = tracker.track
active = tracker.active
wait_idle = tracker.wait_idle
