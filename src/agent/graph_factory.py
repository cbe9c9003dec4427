"""Graph factory for ``langgraph.postgres.json``: the agent graph, with each run tracked.

The server calls ``make_graph`` for real runs and also to read schemas and
state (``runtime.execution_runtime is None`` then). Only real runs enter
``agent.inflight.track``, so the HTTP app's shutdown waits for exactly those.
The graph itself is the module-level ``agent.graph.graph``, compiled once at
import; the server attaches its checkpointer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langchain_core.runnables import RunnableConfig
from langgraph_sdk.runtime import ServerRuntime

from agent import inflight
from agent.context import Context
from agent.graph import AgentGraph, graph

__all__ = ["make_graph"]


@asynccontextmanager
async def make_graph(
    config: RunnableConfig, runtime: ServerRuntime[Context]
) -> AsyncIterator[AgentGraph]:
    """Yield the agent graph; count the run as in flight while the server uses it."""
    if runtime.execution_runtime is None:
        yield graph
        return
    run_id = str(config.get("configurable", {}).get("run_id") or "run")
    async with inflight.track(run_id):
        yield graph
