"""agent.checkpointer against a real PostgreSQL (tests/support/postgres.py).

Async tests run under the strict blocking detector, so these also prove the
pool, the saver and setup() never block the event loop.
"""

from __future__ import annotations

import asyncio
import operator
import time
from typing import Annotated, TypedDict

import pytest
from langgraph.graph import START, StateGraph
from psycopg import AsyncConnection

from agent.checkpointer import (
    DatabaseUnavailable,
    PostgresSettings,
    open_pool,
    open_saver,
    ping,
    postgres_checkpointer,
    redact_url,
    serving_pool,
)
from agent.graph import build_graph
from tests.agent_context import local_context
from tests.support.localmodel import LocalModel
from tests.support.processes import free_port

SAVER_TABLES = {"checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations"}


async def _tables(url: str) -> set[str]:
    async with await AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        return {row[0] for row in await cur.fetchall()}


async def _count(url: str, sql: str, *params: object) -> int:
    async with await AsyncConnection.connect(url) as conn:
        cur = await conn.execute(sql, params)
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


class Tally(TypedDict):
    items: Annotated[list[str], operator.add]


async def _append(state: Tally) -> Tally:
    await asyncio.sleep(0)
    return {"items": [f"step-{len(state['items'])}"]}


def _tally_graph() -> StateGraph[Tally]:
    return StateGraph(Tally).add_node("append", _append).add_edge(START, "append")


@pytest.fixture
def closed_port() -> int:
    """A local TCP port with nothing listening (bound, then released)."""
    return free_port()


# --- settings --------------------------------------------------------------


def test_from_env_reads_every_variable() -> None:
    settings = PostgresSettings.from_env(
        {
            "DATABASE_URL": "postgresql://u:pw@db:5432/app",
            "PG_POOL_MIN_SIZE": "2",
            "PG_POOL_MAX_SIZE": "7",
            "PG_POOL_OPEN_TIMEOUT": "3.5",
            "PG_PREPARE_THRESHOLD": "5",
            "PG_MAX_IDLE": "60",
            "PG_MAX_LIFETIME": "600",
            "PG_CONNECT_TIMEOUT": "4",
            "PG_KEEPALIVES_IDLE": "11",
            "PG_KEEPALIVES_INTERVAL": "6",
            "PG_KEEPALIVES_COUNT": "2",
            "CHECKPOINTER_SETUP": "false",
        }
    )
    assert (settings.min_size, settings.max_size, settings.open_timeout) == (2, 7, 3.5)
    assert (settings.prepare_threshold, settings.max_idle, settings.max_lifetime) == (5, 60, 600)
    assert (settings.connect_timeout, settings.keepalives_idle) == (4, 11)
    assert (settings.keepalives_interval, settings.keepalives_count) == (6, 2)
    assert settings.setup is False
    assert "pw" not in repr(settings)


def test_from_env_defaults_are_pooler_safe() -> None:
    settings = PostgresSettings.from_env({"DATABASE_URL": "postgresql://db/app"})
    assert settings.prepare_threshold is None
    assert settings.setup is True
    assert (
        PostgresSettings.from_env(
            {"DATABASE_URL": "postgresql://db/app", "PG_PREPARE_THRESHOLD": "None"}
        ).prepare_threshold
        is None
    )


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "DATABASE_URL is not set"),
        ({"PG_POOL_MAX_SIZE": "ten"}, "PG_POOL_MAX_SIZE"),
        ({"PG_POOL_MIN_SIZE": "5", "PG_POOL_MAX_SIZE": "2"}, "PG_POOL_MIN_SIZE"),
        ({"PG_POOL_MIN_SIZE": "0"}, "PG_POOL_MIN_SIZE"),
        ({"PG_PREPARE_THRESHOLD": "sometimes"}, "PG_PREPARE_THRESHOLD"),
        ({"CHECKPOINTER_SETUP": "maybe"}, "CHECKPOINTER_SETUP"),
        ({"PG_POOL_OPEN_TIMEOUT": "0"}, "PG_POOL_OPEN_TIMEOUT"),
    ],
)
def test_from_env_names_the_bad_variable(env: dict[str, str], needle: str) -> None:
    if env:
        env = {"DATABASE_URL": "postgresql://db/app", **env}
    with pytest.raises(ValueError, match=needle):
        PostgresSettings.from_env(env)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://alice:s3cret@db:5432/app", "postgresql://alice:***@db:5432/app"),
        ("postgres://alice@db/app", "postgres://alice@db/app"),
        (
            "postgresql://db/app?sslmode=require&password=s3cret",
            "postgresql://db/app?sslmode=require&password=***",
        ),
        (
            "host=db user=alice password=s3cret dbname=app",
            "host=db user=alice password=*** dbname=app",
        ),
        ("host=db password='s3 cret' dbname=app", "host=db password=*** dbname=app"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# --- pool ------------------------------------------------------------------


async def test_pool_applies_settings(fresh_database_url: str) -> None:
    settings = PostgresSettings(
        url=fresh_database_url,
        min_size=2,
        max_size=3,
        max_idle=42.0,
        max_lifetime=420.0,
        keepalives_idle=17,
        keepalives_interval=4,
        keepalives_count=2,
    )
    async with open_pool(settings) as pool:
        stats = pool.get_stats()
        assert (stats["pool_min"], stats["pool_max"], stats["pool_size"]) == (2, 3, 2)
        assert (pool.max_idle, pool.max_lifetime) == (42.0, 420.0)
        async with pool.connection() as conn:
            assert conn.autocommit is True
            assert conn.prepare_threshold is None
            params = conn.info.get_parameters()
            assert params["keepalives"] == "1"
            assert params["keepalives_idle"] == "17"
            assert params["keepalives_interval"] == "4"
            assert params["keepalives_count"] == "2"
            cur = await conn.execute("SHOW application_name")
            assert await cur.fetchone() == {"application_name": "agent-checkpointer"}
        # The same settings through the environment, with preparing on.
        env = {"DATABASE_URL": fresh_database_url, "PG_PREPARE_THRESHOLD": "0"}
        async with open_pool(PostgresSettings.from_env(env)) as eager, eager.connection() as conn:
            assert conn.prepare_threshold == 0
    assert pool.closed


async def test_database_unavailable_is_one_redacted_line(closed_port: int) -> None:
    settings = PostgresSettings(
        url=f"postgresql://alice:s3cret-pw@127.0.0.1:{closed_port}/app", open_timeout=1.0
    )
    started = time.perf_counter()
    with pytest.raises(DatabaseUnavailable) as info:
        async with open_pool(settings):
            pytest.fail("pool opened against a closed port")
    elapsed = time.perf_counter() - started
    message = str(info.value)
    assert "\n" not in message
    assert "s3cret-pw" not in message
    assert f"alice@127.0.0.1:{closed_port}/app" in message
    assert "refused" in message.lower()
    assert info.value.__cause__ is None
    assert elapsed < 8, f"gave up after {elapsed:.1f}s"


async def test_setup_creates_tables(fresh_database_url: str) -> None:
    assert not (await _tables(fresh_database_url)) & SAVER_TABLES
    async with postgres_checkpointer(PostgresSettings(url=fresh_database_url)):
        pass
    assert await _tables(fresh_database_url) >= SAVER_TABLES
    migrations = await _count(fresh_database_url, "SELECT count(*) FROM checkpoint_migrations")
    assert migrations > 0


async def test_setup_false_skips_migrations(fresh_database_url: str) -> None:
    env = {"DATABASE_URL": fresh_database_url, "CHECKPOINTER_SETUP": "false"}
    async with postgres_checkpointer(PostgresSettings.from_env(env)) as saver:
        assert saver is not None
    assert not (await _tables(fresh_database_url)) & SAVER_TABLES


async def test_graph_checkpoints_survive_a_new_pool(fresh_database_url: str) -> None:
    settings = PostgresSettings(url=fresh_database_url)
    config = {"configurable": {"thread_id": "thread-1"}}
    async with postgres_checkpointer(settings) as saver:
        graph = _tally_graph().compile(checkpointer=saver)
        await graph.ainvoke({"items": []}, config)
        result = await graph.ainvoke({"items": []}, config)
        assert result == {"items": ["step-0", "step-1"]}
    rows = await _count(
        fresh_database_url, "SELECT count(*) FROM checkpoints WHERE thread_id = %s", "thread-1"
    )
    assert rows >= 4  # input + one step, per invoke
    # A new pool and saver (as after a restart) read the same state back.
    async with open_pool(settings) as pool:
        saver = await open_saver(pool, setup=False)
        graph = _tally_graph().compile(checkpointer=saver)
        state = await graph.aget_state(config)
        assert state.values == {"items": ["step-0", "step-1"]}
        history = [snapshot async for snapshot in graph.aget_state_history(config)]
        assert len(history) == rows


async def test_serving_pool_is_the_checkpointers_pool(fresh_database_url: str) -> None:
    assert serving_pool() is None
    async with postgres_checkpointer(PostgresSettings(url=fresh_database_url)) as saver:
        pool = serving_pool()
        assert pool is saver.conn
        async with asyncio.timeout(5):
            await ping(pool)
    assert serving_pool() is None
    assert pool.closed


async def test_concurrent_runs_share_one_pool(fresh_database_url: str) -> None:
    settings = PostgresSettings(url=fresh_database_url, min_size=1, max_size=4)
    async with postgres_checkpointer(settings) as saver:
        graph = _tally_graph().compile(checkpointer=saver)
        await asyncio.gather(
            *(
                graph.ainvoke({"items": []}, {"configurable": {"thread_id": f"t{i}"}})
                for i in range(20)
            )
        )
        assert saver.conn.get_stats()["pool_size"] <= 4
    threads = await _count(fresh_database_url, "SELECT count(DISTINCT thread_id) FROM checkpoints")
    assert threads == 20


async def test_concurrent_setup_on_a_fresh_database(fresh_database_url: str) -> None:
    # Replicas starting together: unguarded setup() races on CREATE TABLE and
    # fails with UniqueViolation. max_size=1 proves the guard needs no second
    # pooled connection, and the timeout catches a CREATE INDEX CONCURRENTLY
    # stuck behind a lock waiter.
    settings = PostgresSettings(url=fresh_database_url, max_size=1)

    async def start() -> None:
        async with postgres_checkpointer(settings):
            pass

    async with asyncio.timeout(30):
        results = await asyncio.gather(*(start() for _ in range(6)), return_exceptions=True)
    assert [r for r in results if r is not None] == []
    assert await _tables(fresh_database_url) >= SAVER_TABLES


async def test_agent_graph_conversation_survives_a_new_pool(
    fresh_database_url: str, local_model: LocalModel
) -> None:
    settings = PostgresSettings(url=fresh_database_url)
    config = {"configurable": {"thread_id": "conversation"}}
    context = local_context(local_model)
    async with postgres_checkpointer(settings) as saver:
        agent = build_graph(saver)
        for text in ("my name is Ada", "calculate 6*7"):
            await agent.ainvoke(
                {"messages": [{"role": "user", "content": text}]}, config, context=context
            )
    async with open_pool(settings) as pool:
        agent = build_graph(await open_saver(pool, setup=False))
        state = await agent.aget_state(config)
    messages = state.values["messages"]
    kinds = [m.type for m in messages]
    assert kinds[0] == "human" and "Ada" in messages[0].content
    assert "tool" in kinds, kinds  # the calculator round trip was checkpointed too
    assert kinds[-1] == "ai" and "42" in messages[-1].content, messages[-1]
    assert not state.next
