"""A checkpointer wrapper that can be shut, so no write ever reaches a closed pool.

The drain is bounded, so a run that swallows cancellation may still be alive
when the pool is about to close. Closing the pool under it would turn its next
checkpoint write into ``PoolClosed`` deep inside langgraph. Instead the server
compiles the graph with a :class:`GatedSaver` and closes the gate *before* the
pool: in-flight operations get to finish (bounded), and later ones fail fast
with :class:`SaverClosed`, whose message names the thread and run.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

__all__ = ["GatedSaver", "SaverClosed"]

log = logging.getLogger(__name__)


class SaverClosed(RuntimeError):
    """The server is shutting down; the checkpointer accepts no more work."""


class _Gate:
    """Shared by a saver and its ``with_allowlist`` clones (langgraph clones at compile)."""

    def __init__(self) -> None:
        self.open = True
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()


def _who(config: RunnableConfig | None) -> str:
    configurable = (config or {}).get("configurable", {})
    thread = configurable.get("thread_id", "?")
    # The server puts run_id into configurable (as the LangGraph API does).
    run = configurable.get("run_id", "?")
    return f"thread {thread}, run {run}"


class GatedSaver(BaseCheckpointSaver[Any]):
    """Delegates to ``inner`` until :meth:`close`; afterwards refuses new operations."""

    def __init__(self, inner: BaseCheckpointSaver[Any]) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner
        self._gate = _Gate()

    @property
    def closed(self) -> bool:
        return not self._gate.open

    async def close(self, within: float) -> None:
        """Refuse new work, then wait (bounded) for operations already admitted."""
        self._gate.open = False
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow
            # a cancellation that races with completion.
            async with asyncio.timeout(within):
                await self._gate.idle.wait()
        except TimeoutError:
            log.error(  # noqa: TRY400 - expected condition, one line
                "checkpointer: %d operation(s) still running after %.1fs; closing the pool "
                "will end their connections when they return",
                self._gate.in_flight,
                within,
            )

    @asynccontextmanager
    async def _admit(self, what: str, config: RunnableConfig | None) -> AsyncIterator[None]:
        if not self._gate.open:
            log.warning("checkpointer closed: refused %s for %s", what, _who(config))
            raise SaverClosed(
                f"checkpoint {what} refused for {_who(config)}: the server is shutting down"
            )
        self._gate.in_flight += 1
        self._gate.idle.clear()
        try:
            yield
        finally:
            self._gate.in_flight -= 1
            if self._gate.in_flight == 0:
                self._gate.idle.set()

    # -- delegation -------------------------------------------------------------------

    @property
    def config_specs(self) -> list[Any]:
        return list(self.inner.config_specs)

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.inner.get_next_version(current, channel)

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> GatedSaver:
        clone = copy.copy(self)  # shares _gate, so closing one closes all
        clone.inner = self.inner.with_allowlist(extra_allowlist)
        clone.serde = clone.inner.serde
        return clone

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        async with self._admit("read", config):
            return await self.inner.aget_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        async with self._admit("list", config):
            async for item in self.inner.alist(config, filter=filter, before=before, limit=limit):
                yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        async with self._admit("write", config):
            return await self.inner.aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        async with self._admit("pending-writes", config):
            await self.inner.aput_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        async with self._admit("delete", {"configurable": {"thread_id": thread_id}}):
            await self.inner.adelete_thread(thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        async with self._admit("prune", None):
            await self.inner.aprune(thread_ids, strategy=strategy)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, Any]:
        async with self._admit("read", config):
            return await self.inner.aget_delta_channel_history(config=config, channels=channels)
