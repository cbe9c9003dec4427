"""PooledPostgresSaver against a real PostgreSQL: correct under concurrency, and really concurrent.

Every test here is async, so it also runs under the strict blocking detector
(tests/support/blocking.py): the saver never blocks the loop.

How "the lock is lifted" is proven without timing: a separate transaction
holds ``LOCK TABLE checkpoint_writes``, so every ``aput_writes`` that reaches
PostgreSQL parks there. ``pg_stat_activity`` then shows how many of the
saver's backends are inside PostgreSQL at once, and a wrapper around
``pool.connection`` counts concurrent checkouts. With the stock saver exactly
one operation gets through its ``asyncio.Lock`` while all others queue on it;
with ours all of them reach the database.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row

from agent.checkpointer import Pool, PostgresSettings, open_pool
from agent.pooled_saver import PooledPostgresSaver
from agent.saver_gate import GatedSaver, SaverClosed

APP = "pooled-saver-test"
"""application_name of the pools under test, to find their backends."""

HANG_GUARD = 60.0
"""Only stops a broken test from hanging; no assertion depends on time."""


# --- harness -------------------------------------------------------------------------


@asynccontextmanager
async def _pool(url: str, size: int) -> AsyncIterator[Pool]:
    settings = PostgresSettings(url=url, min_size=size, max_size=size, application_name=APP)
    async with open_pool(settings) as pool:
        yield pool


@asynccontextmanager
async def _migrated_pool(url: str, size: int) -> AsyncIterator[Pool]:
    async with _pool(url, size) as pool:
        await PooledPostgresSaver(pool).setup()
        yield pool


@dataclass
class Checkouts:
    """Counts connections checked out of a pool at the same time."""

    current: int = 0
    peak: int = 0
    total: int = 0

    @classmethod
    def install(cls, pool: Pool) -> Checkouts:
        counter = cls()
        original = pool.connection

        @asynccontextmanager
        async def counted(**kwargs: Any) -> AsyncIterator[AsyncConnection[DictRow]]:
            async with original(**kwargs) as conn:
                counter.current += 1
                counter.total += 1
                counter.peak = max(counter.peak, counter.current)
                try:
                    yield conn
                finally:
                    counter.current -= 1

        pool.connection = counted  # type: ignore[method-assign, assignment]
        return counter


class CountingLock(asyncio.Lock):
    """Replaces the saver's lock to count how many operations tried to take it."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def acquire(self) -> Literal[True]:
        self.attempts += 1
        return await super().acquire()


async def _until(what: str, predicate: Callable[[], Awaitable[bool]]) -> None:
    try:
        async with asyncio.timeout(HANG_GUARD):
            while not await predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


async def _backends_waiting_on_lock(observer: AsyncConnection[DictRow]) -> int:
    cur = await observer.execute(
        "SELECT count(*) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = %s "
        "AND wait_event_type = 'Lock'",
        (APP,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


@asynccontextmanager
async def _writes_table_locked(url: str) -> AsyncIterator[AsyncConnection[DictRow]]:
    """Hold an exclusive lock on checkpoint_writes; yield an observer connection."""
    async with (
        await AsyncConnection.connect(url, row_factory=dict_row) as blocker,
        await AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as observer,
    ):
        await blocker.execute("LOCK TABLE checkpoint_writes IN ACCESS EXCLUSIVE MODE")
        try:
            yield observer
        finally:
            await blocker.rollback()


def _config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


async def _one_write(saver: AsyncPostgresSaver, thread_id: str) -> None:
    await saver.aput_writes(
        _config(thread_id, str(uuid6())), [("ch", {"v": 1})], task_id=str(uuid.uuid4())
    )


# --- (1) many concurrent writers: nothing lost, latest is latest, parents intact ----


SHARED = [f"shared{i}" for i in range(12)]
"""Channels with the same (key, version) in every checkpoint of a thread, so
concurrent writers insert identical blob keys. Each writer lists them in its own
random order; the saver must neither lose them nor deadlock."""


@dataclass
class Expected:
    thread_id: str
    ids: list[str] = field(default_factory=list)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: dict[str, set[tuple[str, str, str]]] = field(default_factory=dict)


def _plan(thread_id: str, n: int) -> tuple[Expected, list[tuple[RunnableConfig, Checkpoint]]]:
    """A chain of ``n`` checkpoints; each one's parent is the one before."""
    expected = Expected(thread_id)
    puts: list[tuple[RunnableConfig, Checkpoint]] = []
    parent: str | None = None
    rng = random.Random(thread_id)
    for i in range(n):
        cid = str(uuid6(clock_seq=i))
        values: dict[str, Any] = {ch: ["same", ch] for ch in SHARED}
        values |= {"own": {"i": i, "thread": thread_id}, "n": i}
        versions: ChannelVersions = {ch: "1" for ch in SHARED}
        versions |= {"own": f"{i + 1:08d}", "n": f"{i:08d}"}
        order = list(values)
        rng.shuffle(order)
        checkpoint = Checkpoint(
            v=4,
            id=cid,
            ts=datetime.now(UTC).isoformat(),
            channel_values={ch: values[ch] for ch in order},
            channel_versions=versions,
            versions_seen={},
            updated_channels=None,
        )
        puts.append((_config(thread_id, parent), checkpoint))
        expected.ids.append(cid)
        expected.values[cid] = values
        parent = cid
    return expected, puts


def _new_versions(checkpoint: Checkpoint) -> ChannelVersions:
    versions = checkpoint["channel_versions"]
    return {ch: versions[ch] for ch in checkpoint["channel_values"]}


async def _put(
    saver: AsyncPostgresSaver, config: RunnableConfig, checkpoint: Checkpoint, step: int
) -> None:
    metadata: CheckpointMetadata = {"source": "loop", "step": step, "parents": {}}
    stored = await saver.aput(config, checkpoint, metadata, _new_versions(checkpoint))
    assert stored["configurable"]["checkpoint_id"] == checkpoint["id"]


async def _put_writes(
    saver: AsyncPostgresSaver, expected: Expected, cid: str, task_id: str
) -> None:
    writes = [("a", {"task": task_id}), ("b", [cid, task_id])]
    await saver.aput_writes(_config(expected.thread_id, cid), writes, task_id)


def _expect_writes(expected: Expected, tasks_per_checkpoint: int) -> Iterator[tuple[str, str]]:
    for cid in expected.ids:
        expected.writes[cid] = set()
        for _ in range(tasks_per_checkpoint):
            task_id = str(uuid.uuid4())
            expected.writes[cid] |= {(task_id, "a", repr({"task": task_id}))}
            expected.writes[cid] |= {(task_id, "b", repr([cid, task_id]))}
            yield cid, task_id


def _check_tuple(tup: CheckpointTuple | None, expected: Expected, index: int) -> None:
    cid = expected.ids[index]
    assert tup is not None, f"{expected.thread_id}: checkpoint {index} missing"
    assert tup.config["configurable"]["checkpoint_id"] == cid
    assert tup.checkpoint["channel_values"] == expected.values[cid]
    assert tup.metadata["step"] == index
    if index == 0:
        assert tup.parent_config is None
    else:
        assert tup.parent_config is not None
        assert tup.parent_config["configurable"]["checkpoint_id"] == expected.ids[index - 1]
    got = {(task, channel, repr(value)) for task, channel, value in tup.pending_writes or []}
    assert got == expected.writes[cid], f"{expected.thread_id}: writes of checkpoint {index}"


async def _verify(saver: AsyncPostgresSaver, expected: Expected) -> None:
    latest = await saver.aget_tuple(_config(expected.thread_id))
    _check_tuple(latest, expected, len(expected.ids) - 1)
    listed = [tup async for tup in saver.alist(_config(expected.thread_id))]
    assert [t.config["configurable"]["checkpoint_id"] for t in listed] == expected.ids[::-1]
    for tup in listed:
        _check_tuple(tup, expected, expected.ids.index(tup.config["configurable"]["checkpoint_id"]))
    for index, cid in enumerate(expected.ids):
        _check_tuple(await saver.aget_tuple(_config(expected.thread_id, cid)), expected, index)


async def _row_counts(url: str) -> tuple[int, int, int]:
    async with await AsyncConnection.connect(url) as conn:
        counts = []
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            cur = await conn.execute(f"SELECT count(*) FROM {table}")
            row = await cur.fetchone()
            assert row is not None
            counts.append(int(row[0]))
        return counts[0], counts[1], counts[2]


async def test_fifty_concurrent_writers_on_one_thread_lose_nothing(
    fresh_database_url: str,
) -> None:
    async with _migrated_pool(fresh_database_url, 10) as pool:
        saver = PooledPostgresSaver(pool)
        checkouts = Checkouts.install(pool)
        expected, puts = _plan(f"one-{uuid.uuid4()}", 50)
        ops: list[Awaitable[None]] = [
            _put(saver, config, checkpoint, step) for step, (config, checkpoint) in enumerate(puts)
        ]
        ops += [
            _put_writes(saver, expected, cid, task) for cid, task in _expect_writes(expected, 2)
        ]
        random.Random(7).shuffle(ops)
        await asyncio.gather(*ops)

        assert checkouts.peak > 1, "operations never overlapped"
        await _verify(saver, expected)
        # The stock saver reads exactly the same thing back.
        await _verify(AsyncPostgresSaver(pool), expected)
    # Shared blobs once, "own" once per checkpoint; "n" is inlined.
    assert await _row_counts(fresh_database_url) == (50, len(SHARED) + 50, 50 * 2 * 2)


async def test_fifty_concurrent_threads_lose_nothing(fresh_database_url: str) -> None:
    async def one_thread(saver: AsyncPostgresSaver, index: int) -> Expected:
        # As in a real run: one thread's checkpoints in order, its writes alongside.
        expected, puts = _plan(f"many-{index}-{uuid.uuid4()}", 4)
        writes = list(_expect_writes(expected, 2))
        for step, (config, checkpoint) in enumerate(puts):
            cid = checkpoint["id"]
            await asyncio.gather(
                _put(saver, config, checkpoint, step),
                *(_put_writes(saver, expected, c, task) for c, task in writes if c == cid),
            )
        return expected

    async with _migrated_pool(fresh_database_url, 10) as pool:
        saver = PooledPostgresSaver(pool)
        checkouts = Checkouts.install(pool)
        threads = await asyncio.gather(*(one_thread(saver, i) for i in range(50)))
        assert checkouts.peak > 1, "operations never overlapped"
        stock = AsyncPostgresSaver(pool)
        await asyncio.gather(*(_verify(saver, expected) for expected in threads))
        await asyncio.gather(*(_verify(stock, expected) for expected in threads))
    assert await _row_counts(fresh_database_url) == (50 * 4, 50 * (len(SHARED) + 4), 50 * 4 * 2 * 2)


async def test_reads_what_the_stock_saver_wrote(fresh_database_url: str) -> None:
    async with _migrated_pool(fresh_database_url, 4) as pool:
        stock, ours = AsyncPostgresSaver(pool), PooledPostgresSaver(pool)
        expected, puts = _plan(f"stock-{uuid.uuid4()}", 6)
        for step, (config, checkpoint) in enumerate(puts):
            await _put(stock, config, checkpoint, step)
        for cid, task in _expect_writes(expected, 2):
            await _put_writes(stock, expected, cid, task)
        await _verify(ours, expected)
        await ours.adelete_thread(expected.thread_id)
        assert await stock.aget_tuple(_config(expected.thread_id)) is None
    assert await _row_counts(fresh_database_url) == (0, 0, 0)


# --- (2) real graphs: 50 concurrent ainvokes on distinct threads ---------------------


class Counter(TypedDict):
    target: int
    count: int
    log: Annotated[list[str], operator.add]


async def _increment(state: Counter) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"count": state["count"] + 1, "log": [f"step-{state['count'] + 1}"]}


def _again(state: Counter) -> str:
    return "increment" if state["count"] < state["target"] else END


def _counter_graph() -> StateGraph[Counter]:
    return (
        StateGraph(Counter)
        .add_node("increment", _increment)
        .add_edge(START, "increment")
        .add_conditional_edges("increment", _again, ["increment", END])
    )


async def _run_graphs(saver: Any, runs: int) -> list[tuple[RunnableConfig, int]]:
    graph = _counter_graph().compile(checkpointer=saver)
    jobs = [(_config(f"graph-{i}-{uuid.uuid4()}"), 3 + i % 5) for i in range(runs)]

    async def run(config: RunnableConfig, target: int) -> None:
        final = await graph.ainvoke({"target": target, "count": 0, "log": []}, config)
        assert final == {
            "target": target,
            "count": target,
            "log": [f"step-{n}" for n in range(1, target + 1)],
        }

    await asyncio.gather(*(run(config, target) for config, target in jobs))
    for config, target in jobs:
        state = await graph.aget_state(config)
        assert state.values["count"] == target
        assert state.next == ()
        history = [snap async for snap in graph.aget_state_history(config)]
        # The input checkpoint (step -1), START (step 0), one per increment.
        assert [snap.metadata["step"] for snap in history if snap.metadata] == list(
            range(target, -2, -1)
        )
        assert [snap.values.get("count") for snap in history[:-1]] == list(range(target, -1, -1))
        for newer, older in itertools.pairwise(history):
            assert newer.parent_config == older.config
        assert history[-1].parent_config is None
    return jobs


async def test_fifty_concurrent_graph_runs(fresh_database_url: str) -> None:
    async with _migrated_pool(fresh_database_url, 10) as pool:
        checkouts = Checkouts.install(pool)
        jobs = await _run_graphs(PooledPostgresSaver(pool), 50)
        assert checkouts.peak > 1, "graph runs never overlapped in the database"
        # The stock saver sees every thread exactly as ours wrote it.
        stock = AsyncPostgresSaver(pool)
        ours = PooledPostgresSaver(pool)
        stock_graph = _counter_graph().compile(checkpointer=stock)
        for config, target in jobs:
            state = await stock_graph.aget_state(config)
            assert state.values["count"] == target
            assert len([s async for s in stock_graph.aget_state_history(config)]) == target + 2
            # The other inherited read path, through our cursor.
            channels = ["count", "log"]
            assert await ours.aget_delta_channel_history(
                config=config, channels=channels
            ) == await stock.aget_delta_channel_history(config=config, channels=channels)


async def test_graph_runs_through_the_gate(fresh_database_url: str) -> None:
    """Composes with agent.saver_gate: runs overlap, and a closed gate refuses work."""
    async with _migrated_pool(fresh_database_url, 10) as pool:
        checkouts = Checkouts.install(pool)
        gate = GatedSaver(PooledPostgresSaver(pool))
        jobs = await _run_graphs(gate, 20)
        assert checkouts.peak > 1
        await gate.close(within=5.0)
        with pytest.raises(SaverClosed):
            await gate.aget_tuple(jobs[0][0])


# --- (3) the lock is lifted ---------------------------------------------------------


IN_FLIGHT = 8


async def test_pooled_saver_puts_every_operation_in_flight_at_once(
    fresh_database_url: str,
) -> None:
    async with _migrated_pool(fresh_database_url, IN_FLIGHT) as pool:
        saver = PooledPostgresSaver(pool)
        saver.lock = lock = CountingLock()
        checkouts = Checkouts.install(pool)
        async with _writes_table_locked(fresh_database_url) as observer:
            ops = [asyncio.create_task(_one_write(saver, f"t{i}")) for i in range(IN_FLIGHT)]

            async def all_in_postgres() -> bool:
                return await _backends_waiting_on_lock(observer) == IN_FLIGHT

            await _until(f"{IN_FLIGHT} saver backends inside PostgreSQL", all_in_postgres)
            assert checkouts.current == IN_FLIGHT
            assert not any(op.done() for op in ops)
        await asyncio.gather(*ops)
    assert checkouts.peak == IN_FLIGHT
    assert lock.attempts == 0, "the pooled saver must never touch the shared lock"


async def test_stock_saver_lets_one_operation_through(fresh_database_url: str) -> None:
    """The control: same setup, the stock saver. Proves the probe can see the lock."""
    async with _migrated_pool(fresh_database_url, IN_FLIGHT) as pool:
        saver = AsyncPostgresSaver(pool)
        saver.lock = lock = CountingLock()
        checkouts = Checkouts.install(pool)
        async with _writes_table_locked(fresh_database_url) as observer:
            ops = [asyncio.create_task(_one_write(saver, f"t{i}")) for i in range(IN_FLIGHT)]

            async def all_queued() -> bool:
                # Every operation has asked for the lock and one is in PostgreSQL:
                # nothing else can reach the database until it returns.
                return lock.attempts == IN_FLIGHT and await _backends_waiting_on_lock(observer) == 1

            await _until("all operations queued on the lock", all_queued)
            assert checkouts.current == 1
            assert not any(op.done() for op in ops)
        await asyncio.gather(*ops)
    assert checkouts.peak == 1


async def test_cancelled_operations_return_their_connections(fresh_database_url: str) -> None:
    async with _migrated_pool(fresh_database_url, IN_FLIGHT) as pool:
        saver = PooledPostgresSaver(pool)
        checkouts = Checkouts.install(pool)
        async with _writes_table_locked(fresh_database_url) as observer:
            ops = [asyncio.create_task(_one_write(saver, f"c{i}")) for i in range(IN_FLIGHT)]

            async def all_in_postgres() -> bool:
                return await _backends_waiting_on_lock(observer) == IN_FLIGHT

            await _until("every operation inside PostgreSQL", all_in_postgres)
            for op in ops:
                op.cancel()
            results = await asyncio.gather(*ops, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results
        assert checkouts.current == 0

        async def all_back() -> bool:
            return pool.get_stats().get("pool_available", 0) == IN_FLIGHT

        await _until("all connections back in the pool", all_back)
        # The pool is healthy: a full round of work succeeds afterwards.
        await asyncio.gather(*(_one_write(saver, f"after{i}") for i in range(IN_FLIGHT)))


async def test_alist_does_not_pin_a_connection(fresh_database_url: str) -> None:
    """With one connection, reading inside ``async for`` over alist still works."""
    async with _migrated_pool(fresh_database_url, 1) as pool:
        saver = PooledPostgresSaver(pool)
        expected, puts = _plan(f"nested-{uuid.uuid4()}", 3)
        for step, (config, checkpoint) in enumerate(puts):
            await _put(saver, config, checkpoint, step)
        seen = []
        async with asyncio.timeout(HANG_GUARD):
            async for tup in saver.alist(_config(expected.thread_id)):
                again = await saver.aget_tuple(tup.config)
                assert again is not None
                seen.append(again.checkpoint["id"])
        assert seen == expected.ids[::-1]


async def test_blob_rows_are_written_in_channel_order(database_url: str) -> None:
    """Deterministic check of the deadlock guard the 50-writer test exercises."""
    async with _pool(database_url, 1) as pool:
        saver = PooledPostgresSaver(pool)
        channels = [f"ch{i}" for i in range(20)]
        random.Random(3).shuffle(channels)
        values = {ch: [ch] for ch in channels}
        rows = await asyncio.to_thread(
            saver._dump_blobs, "t", "", values, {ch: "1" for ch in channels}
        )
        assert [row[2] for row in rows] == sorted(channels)
        assert all(row[5] is not None for row in rows)
        decoded = {row[2]: saver.serde.loads_typed((row[4], row[5] or b"")) for row in rows}
        assert decoded == values


async def test_sync_bridge_from_a_worker_thread(fresh_database_url: str) -> None:
    """The inherited sync methods (used off-loop by langgraph) still go through the pool."""
    async with _migrated_pool(fresh_database_url, 2) as pool:
        saver = PooledPostgresSaver(pool)
        checkouts = Checkouts.install(pool)
        expected, puts = _plan(f"sync-{uuid.uuid4()}", 2)
        for step, (config, checkpoint) in enumerate(puts):
            await _put(saver, config, checkpoint, step)
        expected.writes = {cid: set() for cid in expected.ids}
        tup = await asyncio.to_thread(saver.get_tuple, _config(expected.thread_id))
        _check_tuple(tup, expected, 1)
        listed = await asyncio.to_thread(lambda: list(saver.list(_config(expected.thread_id))))
        assert [t.checkpoint["id"] for t in listed] == expected.ids[::-1]
        assert checkouts.total >= 2


# --- (4) refuses a single connection ------------------------------------------------


async def test_refuses_a_single_connection(database_url: str) -> None:
    async with await AsyncConnection.connect(
        database_url, autocommit=True, row_factory=dict_row
    ) as conn:
        with pytest.raises(TypeError, match="AsyncConnectionPool.*stock AsyncPostgresSaver"):
            PooledPostgresSaver(conn)  # type: ignore[arg-type]


async def test_refuses_a_connection_string(database_url: str) -> None:
    with pytest.raises(TypeError, match="got str"):
        PooledPostgresSaver(database_url)  # type: ignore[arg-type]


async def test_refuses_from_conn_string(database_url: str) -> None:
    with pytest.raises(TypeError, match="AsyncConnectionPool"):
        async with PooledPostgresSaver.from_conn_string(database_url):
            pass
