"""Resources that belong to one event loop.

httpx pools and OpenAI clients are bound to the loop that first used them; reusing
them from another loop fails with "Event loop is closed" or "bound to a different
event loop". `langgraph dev` with ``BG_JOB_ISOLATED_LOOPS=true`` runs each worker on
its own loop, so each loop gets its own copy, built once and then reused. Entries
go away with their loop (weak keys).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class LoopLocal(Generic[T]):
    """A cache of values per (running loop, key), each built once in a worker thread.

    Building runs in ``asyncio.to_thread`` because constructing HTTP clients loads
    CA certificates from disk, which would stall the loop.
    """

    def __init__(self, build: Callable[..., T]) -> None:
        self._build = build
        self._values: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Hashable, asyncio.Future[T]]
        ] = weakref.WeakKeyDictionary()

    async def get(self, *args: Hashable) -> T:
        loop = asyncio.get_running_loop()
        per_loop = self._values.setdefault(loop, {})
        pending = per_loop.get(args)
        if pending is None or (pending.done() and pending.exception() is not None):
            # Share one build between concurrent first callers on this loop.
            pending = asyncio.ensure_future(asyncio.to_thread(self._build, *args))
            per_loop[args] = pending
        return await asyncio.shield(pending)
