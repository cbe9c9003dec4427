"""Run registry against a real PostgreSQL and the real AsyncPostgresSaver.

The invariant under test: the drain finishes before the pool closes, and no
checkpoint operation ever reaches a closed pool. ``ClosedPoolDetector`` is a
saver subclass that records (and fails) any operation arriving after its pool
closed; every test asserts it recorded nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import START, StateGraph

from agent.checkpointer import Pool, PostgresSettings, open_pool
from agent.graph import build_graph
from agent.runs import Draining, Run, RunRecord, RunRegistry, ShutdownPolicy, ThreadBusy
from agent.saver_gate import GatedSaver, SaverClosed
from agent.store import MetadataStore
from tests.agent_context import local_context
from tests.support.localmodel import LocalModel

# -- a saver that proves the invariant --------------------------------------------------


class ClosedPoolDetector(AsyncPostgresSaver):
    """Fails, and remembers, any operation that arrives once the pool is closed."""

    violations: list[str]

    def _check(self, what: str) -> None:
        pool = self.conn
        if getattr(pool, "closed", False):
            self.violations.append(what)
            raise RuntimeError(f"{what} reached a closed pool")

    async def aput(self, config: RunnableConfig, *args: Any, **kwargs: Any) -> RunnableConfig:
        self._check("aput")
        return await super().aput(config, *args, **kwargs)

    async def aput_writes(self, config: RunnableConfig, *args: Any, **kwargs: Any) -> None:
        self._check("aput_writes")
        await super().aput_writes(config, *args, **kwargs)

    async def aget_tuple(self, config: RunnableConfig) -> Any:
        self._check("aget_tuple")
        return await super().aget_tuple(config)


# -- a tiny graph whose nodes we control --------------------------------------------------


class S(TypedDict, total=False):
    steps: Annotated[list[str], operator.add]
    delay: float
    stubborn_for: float
    fail: bool


async def first(state: S) -> dict[str, Any]:
    return {"steps": ["first"]}


async def slow(state: S) -> dict[str, Any]:
    try:
        await asyncio.sleep(state.get("delay", 0.0))
    except asyncio.CancelledError:
        if not state.get("stubborn_for"):
            raise
        # Deliberately swallows every cancellation for a while: a badly behaved node.
        until = asyncio.get_running_loop().time() + state["stubborn_for"]
        while (left := until - asyncio.get_running_loop().time()) > 0:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(left)
        return {"steps": ["stubborn"]}
    if state.get("fail"):
        raise ValueError("node failed on purpose")
    return {"steps": ["slow"]}


def tiny_graph(saver: Any) -> Any:
    return (
        StateGraph(S)
        .add_node("first", first)
        .add_node("slow", slow)
        .add_edge(START, "first")
        .add_edge("first", "slow")
        .compile(checkpointer=saver)
    )


# -- harness: the same exit-stack order as the server ---------------------------------------


@dataclass
class Stack:
    pool: Pool
    detector: ClosedPoolDetector
    gate: GatedSaver
    registry: RunRegistry
    graph: Any
    store: MetadataStore
    stack: AsyncExitStack
    sunk: list[tuple[str, str]] = field(default_factory=list)

    def start(
        self,
        input: dict[str, Any],
        *,
        durability: str = "async",
        context: Any = None,
        **kw: Any,
    ) -> Run:
        thread_id = kw.pop("thread_id", None) or str(uuid.uuid4())
        record = RunRecord(run_id=str(uuid.uuid4()), thread_id=thread_id, assistant_id="agent")

        async def work(run: Run) -> None:
            config: RunnableConfig = {
                "configurable": {"thread_id": thread_id, "run_id": run.run_id}
            }
            async for mode, chunk in self.graph.astream(
                input, config, context=context, stream_mode=["values"], durability=durability
            ):
                run.publish(mode, chunk)

        return self.registry.start(record, work, **kw)

    async def shutdown(self) -> None:
        await self.stack.aclose()


async def open_stack(url: str, policy: ShutdownPolicy, sink: Any = None) -> Stack:
    stack = AsyncExitStack()
    pool = await stack.enter_async_context(open_pool(PostgresSettings(url=url, max_size=20)))
    detector = ClosedPoolDetector(pool)
    detector.violations = []
    await detector.setup()
    store = MetadataStore(pool)
    await store.setup()
    gate = GatedSaver(detector)
    stack.push_async_callback(gate.close, policy.reserve / 2)
    sunk: list[tuple[str, str]] = []

    async def default_sink(record: RunRecord) -> None:
        sunk.append((record.run_id, record.status))
        await store.save_run(record)

    registry = RunRegistry(sink or default_sink, policy)
    stack.push_async_callback(registry.drain)
    return Stack(pool, detector, gate, registry, tiny_graph(gate), store, stack, sunk)


@pytest.fixture
async def reopen(fresh_database_url: str) -> AsyncIterator[Callable[[], Any]]:
    """A second, independent pool + saver for reading what the first one left behind."""
    async with AsyncExitStack() as stack:

        async def make() -> tuple[AsyncPostgresSaver, MetadataStore]:
            pool = await stack.enter_async_context(
                open_pool(PostgresSettings(url=fresh_database_url))
            )
            return AsyncPostgresSaver(pool), MetadataStore(pool)

        yield make


def steps_of(values: Any) -> list[str]:
    return list(values.get("steps", [])) if values else []


# -- tests ---------------------------------------------------------------------------------


async def test_drain_lets_runs_finish_before_the_pool_closes(
    fresh_database_url: str, reopen: Any
) -> None:
    s = await open_stack(fresh_database_url, ShutdownPolicy(timeout=5, grace_fraction=0.8))
    runs = [s.start({"delay": 0.3}) for _ in range(5)]
    await asyncio.sleep(0.05)
    await s.shutdown()

    assert [r.record.status for r in runs] == ["success"] * 5
    assert s.detector.violations == []
    saver, store = await reopen()
    for run in runs:
        state = await saver.aget_tuple({"configurable": {"thread_id": run.record.thread_id}})
        assert state is not None
        assert state.checkpoint["channel_values"]["steps"] == ["first", "slow"]
        stored = await store.get_run(run.record.thread_id, run.run_id)
        assert stored is not None and stored.status == "success"


async def test_cancelled_run_lands_its_final_checkpoint(
    fresh_database_url: str, reopen: Any
) -> None:
    # durability="exit" writes checkpoints only when the loop exits, so the
    # checkpoint exists only if the cancel unwind's final aput landed.
    s = await open_stack(fresh_database_url, ShutdownPolicy(timeout=3, grace_fraction=0.2))
    run = s.start({"delay": 60}, durability="exit")
    await asyncio.sleep(0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await s.shutdown()
    elapsed = loop.time() - started

    assert run.record.status == "interrupted"
    assert elapsed < 3
    assert s.detector.violations == []
    saver, store = await reopen()
    state = await saver.aget_tuple({"configurable": {"thread_id": run.record.thread_id}})
    assert state is not None, "the final checkpoint written on cancellation is missing"
    assert state.checkpoint["channel_values"]["steps"] == ["first"]
    stored = await store.get_run(run.record.thread_id, run.run_id)
    assert stored is not None and stored.status == "interrupted"


async def test_drain_is_bounded_when_a_run_swallows_cancellation(
    fresh_database_url: str, reopen: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    policy = ShutdownPolicy(timeout=2, grace_fraction=0.25)
    s = await open_stack(fresh_database_url, policy)
    # Keeps going 3 s after being cancelled, then tries to checkpoint: after the
    # deadline and after the pool has closed.
    stubborn = s.start({"delay": 60, "stubborn_for": 3})
    polite = s.start({"delay": 60})
    await asyncio.sleep(0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await s.shutdown()
    elapsed = loop.time() - started
    assert elapsed <= policy.timeout + 0.5, f"shutdown took {elapsed:.2f}s"
    assert s.pool.closed

    # Let the straggler wake up and try to write to the (now closed) database.
    assert stubborn.task is not None
    await asyncio.wait_for(stubborn.task, 5)
    assert stubborn.record.error is not None and SaverClosed.__name__ in stubborn.record.error
    assert s.detector.violations == [], "a write reached the closed pool"

    abandoned = [r for r in caplog.records if "did not stop by the deadline" in r.getMessage()]
    assert len(abandoned) == 1 and stubborn.run_id in abandoned[0].getMessage()
    assert any("refused" in r.getMessage() for r in caplog.records if r.name == "agent.saver_gate")

    _saver, store = await reopen()
    for run in (stubborn, polite):
        stored = await store.get_run(run.record.thread_id, run.run_id)
        assert stored is not None and stored.status == "interrupted", run


async def test_run_that_finishes_during_the_drain_keeps_its_status(
    fresh_database_url: str, reopen: Any
) -> None:
    s = await open_stack(fresh_database_url, ShutdownPolicy(timeout=4, grace_fraction=0.5))
    finishes = s.start({"delay": 0.5})
    fails = s.start({"delay": 0.5, "fail": True})
    too_slow = s.start({"delay": 60})
    await asyncio.sleep(0.1)
    await s.shutdown()
    _saver, store = await reopen()
    expected = {finishes: "success", fails: "error", too_slow: "interrupted"}
    for run, status in expected.items():
        stored = await store.get_run(run.record.thread_id, run.run_id)
        assert stored is not None and stored.status == status
    assert s.detector.violations == []


async def test_draining_refuses_new_runs(fresh_database_url: str) -> None:
    s = await open_stack(fresh_database_url, ShutdownPolicy(timeout=2))
    s.start({"delay": 0.5})
    s.registry.begin_drain()
    with pytest.raises(Draining):
        s.start({"delay": 0})
    await s.shutdown()


async def test_drain_survives_a_second_cancellation(fresh_database_url: str) -> None:
    s = await open_stack(fresh_database_url, ShutdownPolicy(timeout=2, grace_fraction=0.25))
    run = s.start({"delay": 60})
    await asyncio.sleep(0.2)
    drain = asyncio.create_task(s.registry.drain())
    await asyncio.sleep(0.1)
    drain.cancel()  # a second signal
    await asyncio.sleep(0.1)
    drain.cancel()
    with pytest.raises(asyncio.CancelledError):
        await drain
    # The cancellation was held back until the drain had done its job.
    assert run.record.status == "interrupted"
    assert run.done
    await s.shutdown()
    assert s.detector.violations == []


async def test_failed_status_persist_is_logged_and_the_run_continues(
    fresh_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken_sink(record: RunRecord) -> None:
        raise ConnectionError("database went away")

    s = await open_stack(fresh_database_url, ShutdownPolicy(timeout=2), sink=broken_sink)
    run = s.start({"delay": 0})
    await run.wait()
    assert run.record.status == "success"
    failures = [r for r in caplog.records if "failed to persist status" in r.getMessage()]
    assert failures, "a failed status write must be visible in the logs"
    assert run.run_id in failures[-1].getMessage()
    assert "database went away" in failures[-1].getMessage()
    assert failures[-1].levelno >= logging.ERROR
    await s.shutdown()


async def test_multitask_reject_interrupt_enqueue(fresh_database_url: str) -> None:
    s = await open_stack(fresh_database_url, ShutdownPolicy(timeout=2))
    thread = str(uuid.uuid4())
    first_run = s.start({"delay": 60}, thread_id=thread)
    with pytest.raises(ThreadBusy):
        s.start({"delay": 0}, thread_id=thread, strategy="reject")

    second = s.start({"delay": 0.2}, thread_id=thread, strategy="interrupt")
    await second.wait()
    assert first_run.record.status == "interrupted"
    assert second.record.status == "success"

    third = s.start({"delay": 0.3}, thread_id=thread, strategy="enqueue")
    fourth = s.start({"delay": 0}, thread_id=thread, strategy="enqueue")
    await fourth.wait()
    assert third.record.status == "success" and fourth.record.status == "success"
    # Enqueued runs ran one after the other on the same thread state.
    assert steps_of(fourth.last("values"))[-4:] == ["first", "slow", "first", "slow"]
    await s.shutdown()
    assert s.detector.violations == []


async def test_real_agent_graph_drains_before_close_and_lands_final_checkpoints(
    fresh_database_url: str, reopen: Any, slow_local_model: LocalModel
) -> None:
    """The agent graph and the real saver: some runs finish in the grace window, the
    rest are cancelled mid model call; with durability="exit" their checkpoint exists
    only if the cancel unwind's final write landed before the pool closed."""
    policy = ShutdownPolicy(timeout=5, grace_fraction=0.6)
    s = await open_stack(fresh_database_url, policy)
    s.graph = build_graph(s.gate)
    context = local_context(slow_local_model)
    quick = [
        s.start({"messages": [("user", f"quick {i}")]}, durability="exit", context=context)
        for i in range(3)
    ]
    slow = [
        s.start(
            {"messages": [("user", f"slow {i} [[latency=30]]")]}, durability="exit", context=context
        )
        for i in range(3)
    ]
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await s.shutdown()
    elapsed = loop.time() - started
    assert elapsed <= policy.timeout, elapsed
    assert s.detector.violations == []
    saver, store = await reopen()
    for run, status in [*((r, "success") for r in quick), *((r, "interrupted") for r in slow)]:
        stored = await store.get_run(run.record.thread_id, run.run_id)
        assert stored is not None and stored.status == status, (stored, status)
        saved = await saver.aget_tuple({"configurable": {"thread_id": run.record.thread_id}})
        assert saved is not None, f"no checkpoint for {status} run {run.run_id}"
        messages = saved.checkpoint["channel_values"]["messages"]
        assert messages[0].content.split()[0] in ("quick", "slow")
        if status == "success":
            assert messages[-1].type == "ai"


async def test_gated_saver_passes_the_checkpointer_conformance_suite(
    fresh_database_url: str,
) -> None:
    async with open_pool(PostgresSettings(url=fresh_database_url, max_size=8)) as pool:
        await AsyncPostgresSaver(pool).setup()

        @checkpointer_test(name="GatedSaver")
        async def factory() -> AsyncIterator[GatedSaver]:
            yield GatedSaver(AsyncPostgresSaver(pool))

        report = await validate(factory)
    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert report.passed_all_base() and report.passed_all(), failures
    assert report.results["prune"].detected and report.results["prune"].tests_passed > 0
