"""The agent graph in-process, against the local model over real HTTP.

Every test here runs under the strict blocking detector (tests/support/blocking.py).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from agent import prompts
from agent.graph import build_graph, graph
from agent.prompts import PromptUnavailable
from tests.agent_context import local_context
from tests.support import pages
from tests.support.blocking import detecting_blocking_calls
from tests.support.localmodel import LocalModel
from tests.support.pages import PROMPT_TEXT, PageServer


def user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


@pytest.fixture(autouse=True)
def _fresh_prompt_cache() -> None:
    prompts.clear_cache()


async def test_plain_turn_streams_tokens(local_model: LocalModel) -> None:
    chunks: list[str] = []
    final: dict[str, Any] = {}
    async for mode, payload in graph.astream(
        user("hello there"),
        context=local_context(local_model),
        stream_mode=["messages", "values"],
    ):
        if mode == "messages":
            message, metadata = payload
            if isinstance(message, AIMessageChunk) and message.content:
                assert metadata["langgraph_node"] == "call_model"
                chunks.append(str(message.content))
        else:
            final = payload
    assert len(chunks) > 3, "tokens should arrive as separate chunks"
    answer = final["messages"][-1]
    assert isinstance(answer, AIMessage)
    assert answer.content.startswith('You said: "hello there".')
    assert "".join(chunks) == answer.content


async def test_tool_turn_calls_calculator(local_model: LocalModel) -> None:
    result = await graph.ainvoke(user("calculate 6*7"), context=local_context(local_model))
    tool_messages = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert [m.content for m in tool_messages] == ["6*7 = 42"]
    assert result["messages"][-1].content == "Tool result: 6*7 = 42"


async def test_second_turn_sees_the_first(local_model: LocalModel) -> None:
    remembering = build_graph(InMemorySaver())
    config = {"configurable": {"thread_id": "memory-test"}}
    context = local_context(local_model)
    await remembering.ainvoke(user("my name is Ada"), config, context=context)
    second = await remembering.ainvoke(user("what is my name?"), config, context=context)
    assert 'Earlier you said: "my name is Ada"' in second["messages"][-1].content
    assert len(second["messages"]) == 4


async def test_tool_loop_is_bounded_and_ends_with_an_answer(local_model: LocalModel) -> None:
    result = await graph.ainvoke(
        user('call calculator({"expression": "1+1"}) and keep calling'),
        context=local_context(local_model, max_tool_rounds=2),
    )
    tool_messages = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert len(tool_messages) == 2
    last = result["messages"][-1]
    assert isinstance(last, AIMessage)
    assert not last.tool_calls
    assert last.content.startswith("You said:")


async def test_fetch_tool_refuses_loopback(
    local_model: LocalModel, page_server: PageServer
) -> None:
    result = await graph.ainvoke(
        user(f"please read {page_server.url}/hello"), context=local_context(local_model)
    )
    tool_message = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert tool_message.status == "error"
    assert "not a public address" in str(tool_message.content)
    assert "fetch_allowlist" in str(tool_message.content)


async def test_fetch_tool_reads_allowlisted_page(
    local_model: LocalModel, page_server: PageServer
) -> None:
    result = await graph.ainvoke(
        user(f"please read {page_server.url}/hello"),
        context=local_context(local_model, fetch_allowlist=["127.0.0.0/8"]),
    )
    tool_message = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert "hello from the page server" in str(tool_message.content)


async def test_fetch_tool_caps_the_body(local_model: LocalModel, page_server: PageServer) -> None:
    result = await graph.ainvoke(
        user(f"read {page_server.url}/big"),
        context=local_context(local_model, fetch_allowlist=["127.0.0.1"], fetch_max_bytes=1000),
    )
    tool_message = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert "[truncated at 1000 bytes]" in str(tool_message.content)
    body = str(tool_message.content).split("\n", 1)[1]
    assert body == "x" * 1000


async def test_fetch_tool_time_limit(local_model: LocalModel, page_server: PageServer) -> None:
    result = await graph.ainvoke(
        user(f"read {page_server.url}/slow?s=3"),
        context=local_context(local_model, fetch_allowlist=["127.0.0.1"], fetch_timeout_s=0.3),
    )
    tool_message = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert "took longer than 0.3 s" in str(tool_message.content)


async def test_current_time_tool(local_model: LocalModel) -> None:
    result = await graph.ainvoke(
        user('call current_time({"timezone": "Asia/Tokyo"})'), context=local_context(local_model)
    )
    tool_message = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert str(tool_message.content).endswith("+09:00")


async def test_prompt_from_url(local_model: LocalModel, page_server: PageServer) -> None:
    context = local_context(
        local_model, prompt_source=f"{page_server.url}/prompt", fetch_allowlist=["127.0.0.1"]
    )
    result = await graph.ainvoke(user("hi"), context=context)
    assert result["system_prompt"] == PROMPT_TEXT
    assert f'(system prompt: "{PROMPT_TEXT}")' in result["messages"][-1].content


async def test_prompt_cache_honours_ttl(local_model: LocalModel, page_server: PageServer) -> None:
    source = f"{page_server.url}/prompt?ttl-test"
    context = local_context(local_model, prompt_source=source, fetch_allowlist=["127.0.0.1"])
    before = pages.hits["/prompt"]
    assert await prompts.system_prompt(context) == PROMPT_TEXT
    assert await prompts.system_prompt(context) == PROMPT_TEXT
    assert pages.hits["/prompt"] == before + 1, "the second call must come from the cache"
    expired = local_context(
        local_model, prompt_source=source, fetch_allowlist=["127.0.0.1"], prompt_cache_ttl_s=0.01
    )
    prompts.clear_cache()
    await prompts.system_prompt(expired)
    await asyncio.sleep(0.05)
    await prompts.system_prompt(expired)
    assert pages.hits["/prompt"] == before + 3, "an expired entry must be fetched again"


async def test_cached_prompt_is_not_served_past_a_narrower_allowlist(
    local_model: LocalModel, page_server: PageServer
) -> None:
    source = f"{page_server.url}/prompt"
    allowed = local_context(local_model, prompt_source=source, fetch_allowlist=["127.0.0.1"])
    assert await prompts.system_prompt(allowed) == PROMPT_TEXT
    refused = local_context(local_model, prompt_source=source, fetch_allowlist=[])
    with pytest.raises(PromptUnavailable, match="not a public address"):
        await prompts.system_prompt(refused)


async def test_concurrent_cache_misses_share_one_fetch(
    local_model: LocalModel, page_server: PageServer
) -> None:
    source = f"{page_server.url}/prompt?delay=0.2"
    context = local_context(local_model, prompt_source=source, fetch_allowlist=["127.0.0.1"])
    before = pages.hits["/prompt"]
    texts = await asyncio.gather(*(prompts.system_prompt(context) for _ in range(50)))
    assert set(texts) == {PROMPT_TEXT}
    assert pages.hits["/prompt"] == before + 1


async def test_prompt_failure_uses_fallback_or_says_why(local_model: LocalModel) -> None:
    missing = local_context(local_model, prompt_source="file:prompts/does-not-exist.md")
    with pytest.raises(PromptUnavailable, match="does-not-exist.md"):
        await graph.ainvoke(user("hi"), context=missing)
    with_fallback = local_context(
        local_model, prompt_source="file:prompts/does-not-exist.md", prompt_fallback="Be brief."
    )
    result = await graph.ainvoke(user("hi"), context=with_fallback)
    assert result["system_prompt"] == "Be brief."


async def test_prompt_files_must_stay_inside_the_project(local_model: LocalModel) -> None:
    escaping = local_context(local_model, prompt_source="file:../../../../etc/passwd")
    with pytest.raises(PromptUnavailable, match="inside the project"):
        await prompts.system_prompt(escaping)


async def test_unknown_prompt_source_is_explained(local_model: LocalModel) -> None:
    with pytest.raises(PromptUnavailable, match="Unknown prompt source"):
        await prompts.system_prompt(local_context(local_model, prompt_source="ftp://x"))


async def test_concurrent_runs_share_the_loop(local_model: LocalModel) -> None:
    context = local_context(local_model)
    results = await asyncio.gather(
        *(graph.ainvoke(user(f"run {i}"), context=context) for i in range(20))
    )
    assert [r["messages"][-1].content.split(".")[0] for r in results] == [
        f'You said: "run {i}"' for i in range(20)
    ]


def test_runs_on_separate_event_loops(local_model: LocalModel) -> None:
    """BG_JOB_ISOLATED_LOOPS and per-call asyncio.run: each loop gets its own client.

    A client cached across loops fails here with "Event loop is closed".
    """
    context = local_context(local_model)
    errors: list[BaseException] = []

    def run_on_a_new_loop() -> None:
        try:
            result = asyncio.run(graph.ainvoke(user("calculate 1+2"), context=context))
            assert result["messages"][-1].content == "Tool result: 1+2 = 3"
        except BaseException as error:  # reported to the test thread below
            errors.append(error)

    with detecting_blocking_calls():
        for _ in range(2):
            run_on_a_new_loop()
        worker = threading.Thread(target=run_on_a_new_loop)
        worker.start()
        worker.join()
    assert errors == []


def test_control_stock_client_breaks_across_loops(local_model: LocalModel) -> None:
    """Why model.py builds a client per loop: the stock cached client does not survive."""
    from langchain_openai import ChatOpenAI

    stock = ChatOpenAI(
        model="local-model", base_url=local_model.base_url, api_key="x", max_retries=0
    )
    outcomes = []
    for _ in range(2):
        try:
            asyncio.run(stock.ainvoke("hi"))
            outcomes.append("ok")
        except RuntimeError as error:
            outcomes.append(str(error))
    assert outcomes == ["ok", "Event loop is closed"]
