"""One SDK conversation that any LangGraph-API-compatible server must pass.

It is run against ``langgraph dev`` (shared loop and isolated loops) and against
the self-hosted server, with the official ``langgraph_sdk`` client, unchanged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from langgraph_sdk.client import LangGraphClient

from tests.support.localmodel import LocalModel

ASSISTANT = "agent"
CONCURRENT_RUNS = 20


def user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def last_text(values: Any) -> str:
    assert isinstance(values, dict), f"expected state values, got {values!r}"
    return str(values["messages"][-1]["content"])


@dataclass
class ScenarioReport:
    streamed_events: dict[str, int] = field(default_factory=dict)
    token_chunks: int = 0
    max_model_requests_in_flight: int = 0


async def run_scenario(client: LangGraphClient, model: LocalModel) -> ScenarioReport:
    report = ScenarioReport()

    assistants = await client.assistants.search(graph_id=ASSISTANT)
    assert any(a["graph_id"] == ASSISTANT for a in assistants), assistants

    thread = await client.threads.create()
    thread_id = thread["thread_id"]

    first = await client.runs.wait(thread_id, ASSISTANT, input=user("hello there"))
    assert last_text(first).startswith('You said: "hello there".'), first

    # Streamed second turn: tokens arrive as messages-tuple events and the model
    # sees the first turn.
    final_values: Any = None
    async for part in client.runs.stream(
        thread_id,
        ASSISTANT,
        input=user("what did I say?"),
        stream_mode=["values", "updates", "messages-tuple"],
    ):
        report.streamed_events[part.event] = report.streamed_events.get(part.event, 0) + 1
        assert part.event != "error", part.data
        if part.event == "messages":
            chunk, metadata = part.data
            if chunk.get("content") and metadata.get("langgraph_node") == "call_model":
                report.token_chunks += 1
        if part.event == "values":
            final_values = part.data
    assert {"metadata", "values", "updates", "messages"} <= set(report.streamed_events)
    assert report.token_chunks > 3, report
    assert 'Earlier you said: "hello there"' in last_text(final_values)

    tool_turn = await client.runs.wait(thread_id, ASSISTANT, input=user("calculate 2+3"))
    assert last_text(tool_turn) == "Tool result: 2+3 = 5", tool_turn
    state = await client.threads.get_state(thread_id)
    kinds = [m["type"] for m in state["values"]["messages"]]
    assert kinds == ["human", "ai", "human", "ai", "human", "ai", "tool", "ai"], kinds
    history = await client.threads.get_history(thread_id, limit=100)
    assert len(history) >= 8

    report.max_model_requests_in_flight = await _concurrent_runs(client, model)
    await _cancel_in_progress(client)
    return report


async def _concurrent_runs(client: LangGraphClient, model: LocalModel) -> int:
    """Runs on separate threads, each waiting 1 s on the model: they must overlap."""
    threads = await asyncio.gather(*(client.threads.create() for _ in range(CONCURRENT_RUNS)))
    peak = 0
    done = asyncio.Event()

    async def watch_model() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, (await model.astats())["in_flight"])
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_model())
    try:
        results = await asyncio.gather(
            *(
                client.runs.wait(t["thread_id"], ASSISTANT, input=user(f"run {i} [[latency=1]]"))
                for i, t in enumerate(threads)
            )
        )
    finally:
        done.set()
        await watcher
    for i, result in enumerate(results):
        assert last_text(result).startswith(f'You said: "run {i}".'), result
    # Overlap shown without timing: many model requests were open at once.
    assert peak >= CONCURRENT_RUNS // 2, f"runs did not overlap (peak in flight {peak})"
    return peak


async def _cancel_in_progress(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    run = await client.runs.create(
        thread["thread_id"], ASSISTANT, input=user("take your time [[latency=30]]")
    )
    async with asyncio.timeout(30):
        while (await client.runs.get(thread["thread_id"], run["run_id"]))["status"] != "running":
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # well inside the model call
    await client.runs.cancel(thread["thread_id"], run["run_id"], wait=True)
    cancelled = await client.runs.get(thread["thread_id"], run["run_id"])
    assert cancelled["status"] == "interrupted", cancelled
