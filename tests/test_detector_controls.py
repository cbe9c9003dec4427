"""Negative controls: the test detector must catch the classic mistakes in a node.

Each node below is written the common wrong way. Under the autouse detector the
run fails with BlockingError; the same work done through asyncio.to_thread passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import httpx
import pytest
from langgraph.graph import START, StateGraph

from tests.support.blocking import BlockingError
from tests.support.localmodel import LocalModel


class Counter(TypedDict):
    n: int


def one_node_graph(node: Callable[[Counter], Any]) -> Any:
    return StateGraph(Counter).add_node("work", node).add_edge(START, "work").compile()


async def test_time_sleep_in_a_node_is_caught() -> None:
    async def sleepy(state: Counter) -> Counter:
        time.sleep(0.01)
        return {"n": state["n"] + 1}

    with pytest.raises(BlockingError, match="sleep"):
        await one_node_graph(sleepy).ainvoke({"n": 0})


async def test_sync_httpx_in_a_node_is_caught(local_model: LocalModel) -> None:
    async def sync_http(state: Counter) -> Counter:
        with httpx.Client() as client:
            client.get(f"{local_model.url}/health")
        return {"n": state["n"] + 1}

    with pytest.raises(BlockingError):
        await one_node_graph(sync_http).ainvoke({"n": 0})


async def test_file_read_in_a_node_is_caught() -> None:
    """langgraph dev lets this one through; our detector is stricter."""

    async def reads_file(state: Counter) -> Counter:
        with open(__file__, encoding="utf-8") as handle:
            handle.read()
        return {"n": state["n"] + 1}

    with pytest.raises(BlockingError, match="read"):
        await one_node_graph(reads_file).ainvoke({"n": 0})


async def test_os_stat_in_a_node_is_caught() -> None:
    async def stats_file(state: Counter) -> Counter:
        Path(__file__).exists()
        return {"n": state["n"] + 1}

    with pytest.raises(BlockingError):
        await one_node_graph(stats_file).ainvoke({"n": 0})


async def test_the_same_work_in_a_thread_passes(local_model: LocalModel) -> None:
    def blocking_work() -> int:
        time.sleep(0.01)
        with httpx.Client() as client:
            status = client.get(f"{local_model.url}/health").status_code
        Path(__file__).read_text(encoding="utf-8")
        return status

    async def offloaded(state: Counter) -> Counter:
        status = await asyncio.to_thread(blocking_work)
        return {"n": state["n"] + status}

    assert await one_node_graph(offloaded).ainvoke({"n": 0}) == {"n": 200}
