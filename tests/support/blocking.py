"""Pytest plugin: every ``async def`` test runs under a blocking-call detector.

We use the ``blockbuster`` library directly with ALL of its checks on. That is
stricter than ``langgraph dev``, which switches off file reads/writes,
``os.stat``, ``os.listdir``, ``os.path.*`` and lock acquisition because "people
use them so often". They still stall the loop, so they fail here.

Only calls made on a thread with a running event loop are checked, so sync
fixtures (starting servers, creating databases) are unaffected. A test whose
*own body* must do sync work (never the code under test) can opt out with
``@pytest.mark.blocking_allowed("why")``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from blockbuster import BlockBuster, BlockingError

__all__ = ["BlockingError", "detecting_blocking_calls", "strict_detector"]


def strict_detector() -> BlockBuster:
    """A detector that scans every module and keeps every check blockbuster has."""
    detector = BlockBuster(excluded_modules=[])
    # pytest writes captured output and logs through these; they are the
    # harness, not the code under test.
    for module, function in (
        ("logging/__init__.py", "emit"),
        ("logging/__init__.py", "flush"),
        ("_pytest/capture.py", "write"),
    ):
        for name in ("io.TextIOWrapper.write", "io.BufferedWriter.write"):
            detector.functions[name].can_block_in(module, function)
    return detector


@contextmanager
def detecting_blocking_calls() -> Iterator[BlockBuster]:
    """For sync tests that start their own event loops (``asyncio.run``, threads)."""
    detector = strict_detector()
    detector.activate()
    try:
        yield detector
    finally:
        detector.deactivate()


@pytest.fixture(autouse=True)
def _detect_blocking_calls(request: pytest.FixtureRequest) -> Iterator[None]:
    is_async_test = inspect.iscoroutinefunction(getattr(request.node, "obj", None))
    if not is_async_test or request.node.get_closest_marker("blocking_allowed"):
        yield
        return
    with detecting_blocking_calls():
        yield
