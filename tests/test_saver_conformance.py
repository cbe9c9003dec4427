"""The official checkpointer conformance suite against a real PostgreSQL.

``langgraph-checkpoint-conformance`` is a library, not a pytest plugin: a
factory registered with ``@checkpointer_test`` is handed to ``validate()``,
which builds a fresh saver per capability, runs that capability's spec
functions and returns a :class:`CapabilityReport`. Capabilities are detected
by which ``a*`` methods the saver overrides; the Postgres savers implement the
five base ones plus ``prune``.

The stock ``AsyncPostgresSaver`` on the same kind of pool is the reference: if
a capability fails for both, the suite or the library changed, not our saver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES, Capability
from langgraph.checkpoint.conformance.report import CapabilityReport
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from agent.checkpointer import Pool, PostgresSettings, open_pool
from agent.pooled_saver import PooledPostgresSaver

# What the installed Postgres savers implement; anything else is "not detected".
EXPECTED = {cap.value for cap in BASE_CAPABILITIES} | {Capability.PRUNE.value}

SaverFactory = Callable[[Pool], AsyncPostgresSaver]


async def _run_suite(url: str, name: str, build: SaverFactory) -> CapabilityReport:
    settings = PostgresSettings(url=url, min_size=1, max_size=8)
    async with open_pool(settings) as pool:
        await build(pool).setup()

        @checkpointer_test(name=name)
        async def factory() -> AsyncIterator[AsyncPostgresSaver]:
            yield build(pool)

        return await validate(factory)


def _summary(report: CapabilityReport) -> str:
    lines = [f"{report.checkpointer_name}: {report.conformance_level()}"]
    for name, result in sorted(report.results.items()):
        lines.append(
            f"  {name}: detected={result.detected} passed={result.passed} "
            f"({result.tests_passed} ok, {result.tests_failed} failed) {result.failures}"
        )
    return "\n".join(lines)


def _assert_conforms(report: CapabilityReport) -> None:
    summary = _summary(report)
    assert report.passed_all_base(), summary
    assert report.passed_all(), summary
    detected = {name for name, result in report.results.items() if result.detected}
    assert detected == EXPECTED, summary
    for name in EXPECTED:
        # A capability with zero tests run would "pass" vacuously.
        assert report.results[name].tests_passed > 0, summary


async def test_pooled_saver_conforms(fresh_database_url: str) -> None:
    report = await _run_suite(fresh_database_url, "PooledPostgresSaver", PooledPostgresSaver)
    _assert_conforms(report)


async def test_stock_saver_conforms_as_reference(fresh_database_url: str) -> None:
    report = await _run_suite(fresh_database_url, "AsyncPostgresSaver", AsyncPostgresSaver)
    _assert_conforms(report)


async def test_pooled_saver_reports_same_counts_as_stock(database_url: str) -> None:
    """Same suite, same numbers: no test is skipped or lost for our saver."""
    # Both on one database: thread ids are random UUIDs, so runs do not collide.
    ours = await _run_suite(database_url, "PooledPostgresSaver", PooledPostgresSaver)
    stock = await _run_suite(database_url, "AsyncPostgresSaver", AsyncPostgresSaver)
    counts = {
        name: (result.tests_passed, result.tests_failed) for name, result in ours.results.items()
    }
    assert counts == {
        name: (result.tests_passed, result.tests_failed) for name, result in stock.results.items()
    }, f"{_summary(ours)}\n{_summary(stock)}"


@pytest.mark.parametrize("capability", sorted(EXPECTED))
async def test_each_capability_passes_on_pooled_saver(
    fresh_database_url: str, capability: str
) -> None:
    """One pytest item per capability, so CI names the one that broke."""
    settings = PostgresSettings(url=fresh_database_url, min_size=1, max_size=8)
    async with open_pool(settings) as pool:
        await PooledPostgresSaver(pool).setup()

        @checkpointer_test(name=f"PooledPostgresSaver[{capability}]")
        async def factory() -> AsyncIterator[AsyncPostgresSaver]:
            yield PooledPostgresSaver(pool)

        report = await validate(factory, capabilities={capability})
    result = report.results[capability]
    assert result.detected, _summary(report)
    assert result.passed is True, _summary(report)
    assert result.tests_passed > 0, _summary(report)
