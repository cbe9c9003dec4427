"""Thread and run records in Postgres, so the SDK sees the same threads and run
statuses after a restart. Checkpoints (the thread *state*) stay in the saver's
own tables; these two tables only hold what the LangGraph API adds on top.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, cast

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from agent.runs import RunRecord, RunStatus

__all__ = ["MetadataStore"]

log = logging.getLogger(__name__)

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS agent_threads (
        thread_id text PRIMARY KEY,
        metadata jsonb NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS agent_runs (
        run_id text PRIMARY KEY,
        thread_id text NOT NULL,
        assistant_id text NOT NULL,
        status text NOT NULL,
        multitask_strategy text NOT NULL,
        metadata jsonb NOT NULL DEFAULT '{}',
        error text,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS agent_runs_by_thread ON agent_runs (thread_id, created_at DESC)",
)


# Timestamps come back as epoch seconds: parsing ``timestamptz`` makes psycopg load
# the session's zoneinfo file, a blocking read on the event loop.
_RUN_COLUMNS = (
    "run_id, thread_id, assistant_id, status, multitask_strategy, metadata, error, "
    "extract(epoch FROM created_at)::float8 AS created_at, "
    "extract(epoch FROM updated_at)::float8 AS updated_at"
)
_THREAD_COLUMNS = (
    "thread_id, metadata, extract(epoch FROM created_at)::float8 AS created_at, "
    "extract(epoch FROM updated_at)::float8 AS updated_at"
)


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _thread(row: DictRow) -> dict[str, Any]:
    return {**row, "created_at": _time(row["created_at"]), "updated_at": _time(row["updated_at"])}


def _record(row: DictRow) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        thread_id=row["thread_id"],
        assistant_id=row["assistant_id"],
        status=cast(RunStatus, row["status"]),
        multitask_strategy=row["multitask_strategy"],
        metadata=row["metadata"],
        error=row["error"],
        created_at=_time(row["created_at"]),
        updated_at=_time(row["updated_at"]),
    )


class MetadataStore:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def setup(self) -> None:
        async with self._pool.connection() as conn:
            for statement in _SCHEMA:
                await conn.execute(statement)

    async def recover(self) -> int:
        """Mark runs a crashed process left ``pending``/``running`` as interrupted.

        Only valid with ONE server process per database: a second live replica's
        runs would be marked too.
        """
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "UPDATE agent_runs SET status = 'interrupted', updated_at = now(), "
                "error = 'server stopped before the run finished' "
                "WHERE status IN ('pending', 'running')"
            )
            count = cursor.rowcount
        if count:
            log.warning("marked %d run(s) left over from a previous process as interrupted", count)
        return count

    # -- threads ----------------------------------------------------------------------

    async def create_thread(
        self, thread_id: str, metadata: dict[str, Any], *, if_exists: str = "raise"
    ) -> tuple[dict[str, Any], bool]:
        """Insert a thread; returns (row, created). ``created`` is False if it existed."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO agent_threads (thread_id, metadata) VALUES (%s, %s) "
                f"ON CONFLICT (thread_id) DO NOTHING RETURNING {_THREAD_COLUMNS}",
                (thread_id, Jsonb(metadata)),
            )
            row = await cursor.fetchone()
        if row is not None:
            return _thread(row), True
        existing = await self.get_thread(thread_id)
        assert existing is not None
        return existing, False

    async def get_thread(self, thread_id: str) -> dict[str, Any] | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_THREAD_COLUMNS} FROM agent_threads WHERE thread_id = %s", (thread_id,)
            )
            row = await cursor.fetchone()
        return _thread(row) if row is not None else None

    async def touch_thread(self, thread_id: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE agent_threads SET updated_at = now() WHERE thread_id = %s", (thread_id,)
            )

    # -- runs -------------------------------------------------------------------------

    async def save_run(self, record: RunRecord) -> None:
        """Upsert one run; this is the run registry's status sink."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO agent_runs (run_id, thread_id, assistant_id, status, "
                "multitask_strategy, metadata, error, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, "
                "error = excluded.error, updated_at = excluded.updated_at",
                (
                    record.run_id,
                    record.thread_id,
                    record.assistant_id,
                    record.status,
                    record.multitask_strategy,
                    Jsonb(record.metadata),
                    record.error,
                    record.created_at,
                    record.updated_at,
                ),
            )

    async def get_run(self, thread_id: str, run_id: str) -> RunRecord | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM agent_runs WHERE thread_id = %s AND run_id = %s",
                (thread_id, run_id),
            )
            row = await cursor.fetchone()
        return _record(row) if row is not None else None

    async def list_runs(
        self, thread_id: str, *, limit: int, offset: int, status: str | None
    ) -> list[RunRecord]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM agent_runs WHERE thread_id = %s "
                "AND (%s::text IS NULL OR status = %s) "
                "ORDER BY created_at DESC LIMIT %s OFFSET %s",
                (thread_id, status, status, limit, offset),
            )
            rows = await cursor.fetchall()
        return [_record(row) for row in rows]

    async def last_run_status(self, thread_id: str) -> str | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT status FROM agent_runs WHERE thread_id = %s "
                "ORDER BY created_at DESC LIMIT 1",
                (thread_id,),
            )
            row = await cursor.fetchone()
        return str(row["status"]) if row is not None else None
