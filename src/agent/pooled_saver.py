"""``AsyncPostgresSaver`` on a connection pool, without the process-wide lock.

The stock saver wraps every query in one ``asyncio.Lock`` (langgraph issue
#7259). That lock exists to protect a *single* ``AsyncConnection``, which only
one coroutine may use at a time. On a pool it protects nothing, yet it still
serializes all checkpoint I/O in the process: 50 concurrent runs queue up
behind one in-flight query while the pool's other connections sit idle.

:class:`PooledPostgresSaver` changes only how an operation gets its cursor:
every operation checks out its own pooled connection and returns it when done.
SQL, serialization and schema are inherited untouched, so what it writes is
byte-for-byte what the stock saver writes, and either saver reads the other's
data. Concurrent operations are kept consistent by PostgreSQL itself: every
statement is an upsert on a unique key, and ``aput`` sends its blob and
checkpoint rows through one pipeline, as the stock saver does.

One thing the lock did hide: a pipeline runs as one implicit transaction, so
two ``aput`` calls on the same thread that insert the same blob keys in
opposite orders could deadlock (PostgreSQL aborts one with
``DeadlockDetected``). The stock saver has the same exposure across processes.
Here blob rows are always written in key order, so they cannot.

It refuses a single ``AsyncConnection`` (or a pipeline): there the lock *is*
needed, so use the stock ``AsyncPostgresSaver``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, CheckpointTuple
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

__all__ = ["PooledPostgresSaver"]


class PooledPostgresSaver(AsyncPostgresSaver):
    """A Postgres checkpointer whose operations run concurrently, one pooled connection each.

    Build it on the running event loop (the base class captures it), on a pool
    whose connections use ``autocommit=True`` (``setup()`` runs ``CREATE INDEX
    CONCURRENTLY``) and ``row_factory=dict_row``. Size the pool for the number
    of checkpoint operations you want in flight at once, plus headroom for
    anything else sharing the pool. Beyond that, operations queue for a
    connection instead of for a lock, with one difference: the lock waited
    forever, the pool waits its ``timeout`` (30 s by default) and then raises
    ``PoolTimeout``.
    """

    pool: AsyncConnectionPool[AsyncConnection[DictRow]]

    def __init__(
        self,
        conn: AsyncConnectionPool[AsyncConnection[DictRow]],
        serde: SerializerProtocol | None = None,
    ) -> None:
        if not isinstance(conn, AsyncConnectionPool):
            raise TypeError(
                f"PooledPostgresSaver needs a psycopg_pool.AsyncConnectionPool, got "
                f"{type(conn).__name__}. A single connection can serve only one query "
                f"at a time, so it needs the stock AsyncPostgresSaver and its lock."
            )
        super().__init__(conn, serde=serde)
        self.pool = conn

    @classmethod
    @asynccontextmanager
    async def from_conn_string(
        cls,
        conn_string: str,
        *,
        pipeline: bool = False,
        serde: SerializerProtocol | None = None,
    ) -> AsyncIterator[AsyncPostgresSaver]:
        """Refused: the inherited version opens a single connection."""
        raise TypeError(
            "PooledPostgresSaver.from_conn_string would use a single connection; open an "
            "AsyncConnectionPool and pass it to PooledPostgresSaver(pool) instead"
        )
        yield  # pragma: no cover - makes this an async generator like the base

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        # Every inherited operation (setup, aput, aput_writes, alist, aget_tuple,
        # adelete_thread, aprune, aget_delta_channel_history) and every sync
        # bridge comes through here. None of them opens a second cursor while
        # holding one, so an operation never needs two connections at once.
        async with self.pool.connection() as conn:
            if not pipeline:
                async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
            elif self.supports_pipeline:
                # As the stock saver: the statements of one aput/aput_writes
                # are sent together, and the pipeline is synced on exit.
                async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
            else:
                async with (
                    conn.transaction(),
                    conn.cursor(binary=True, row_factory=dict_row) as cur,
                ):
                    yield cur

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """List checkpoints, newest first, as the stock saver does.

        The stock ``alist`` yields while its cursor (and connection) is still
        open. Here the results are collected first, so the connection goes back
        to the pool before the caller's loop body runs: a caller that uses the
        saver inside ``async for`` (or stops early and leaves the generator
        suspended) does not pin a connection, and cannot exhaust a small pool.
        The stock query already fetches every row before yielding, so this only
        adds the decoded tuples to memory.
        """
        found = [
            item async for item in super().alist(config, filter=filter, before=before, limit=limit)
        ]
        for item in found:
            yield item

    def _dump_blobs(
        self,
        thread_id: str,
        checkpoint_ns: str,
        values: dict[str, Any],
        versions: ChannelVersions,
    ) -> list[tuple[str, str, str, str, str, bytes | None]]:
        # Rows are (thread_id, checkpoint_ns, channel, version, type, blob),
        # one per channel. Inserting them in channel order makes concurrent
        # writers of the same keys wait for each other instead of deadlocking.
        rows = super()._dump_blobs(thread_id, checkpoint_ns, values, versions)
        return sorted(rows, key=lambda row: row[2])
