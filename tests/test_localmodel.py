"""The offline model server, driven by the real OpenAI SDK and ChatOpenAI over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessageParam
from pydantic import SecretStr

from localmodel.replies import build_reply, parse_directives, split_tokens
from tests.support.localmodel import LocalModel


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return expression


@tool
def fetch_url(url: str) -> str:
    """Fetch a web page."""
    return url


# Clients are built in sync fixtures: their first construction reads package
# metadata and certificates from disk, which the blocking detector rejects.
@pytest.fixture(scope="module")
def llm(local_model: LocalModel) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=local_model.base_url, api_key=SecretStr("local"), model="local-model"
    )


@pytest.fixture(scope="module")
def client(local_model: LocalModel) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=local_model.base_url, api_key="local", max_retries=0)


@pytest.fixture(scope="module")
def retrying_client(local_model: LocalModel) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=local_model.base_url, api_key="local", max_retries=2)


@pytest.fixture(scope="module")
def impatient_client(local_model: LocalModel) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=local_model.base_url, api_key="local", max_retries=0, timeout=0.5
    )


USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module", autouse=True)
def _server_stays_healthy(local_model: LocalModel) -> Iterator[None]:
    """Faults and abandoned requests must never surface as server-side exceptions."""
    yield
    assert local_model.log_path is not None
    log = local_model.log_path.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log


# --- pure reply rules -------------------------------------------------------


def test_reply_rules() -> None:
    tools = [{"type": "function", "function": {"name": n}} for n in ("calculator", "fetch_url")]
    explicit = build_reply(
        [{"role": "user", "content": 'call calculator({"expression": "(1+2)*3"}) please'}], tools
    )
    assert [(c.name, json.loads(c.arguments)) for c in explicit.tool_calls] == [
        ("calculator", {"expression": "(1+2)*3"})
    ]
    url = build_reply([{"role": "user", "content": "see (https://example.com/a?b=1)."}], tools)
    assert json.loads(url.tool_calls[0].arguments) == {"url": "https://example.com/a?b=1"}
    calc = build_reply([{"role": "user", "content": "Calculate 6 * 7?\nthanks"}], tools)
    assert json.loads(calc.tool_calls[0].arguments) == {"expression": "6 * 7"}
    none = build_reply([{"role": "user", "content": "calculate 1+1"}], tools, "none")
    assert none.text == 'You said: "calculate 1+1".'
    parts = [{"type": "text", "text": "a "}, {"type": "text", "text": "b [[latency=0.5]]"}]
    assert build_reply([{"role": "user", "content": parts}]).text == 'You said: "a b".'
    assert parse_directives("x [[latency=2.5]] [[token_rate=10]] [[latency=oops]]") == {
        "latency": 2.5,
        "token_rate": 10.0,
    }
    assert "".join(split_tokens("  two words ")) == "  two words "
    ids = {
        build_reply([{"role": "user", "content": "call fetch_url()"}], tools).tool_calls[0].id
        for _ in range(5)
    }
    assert len(ids) == 5
    assert all(len(i) == 29 and int(i[5:], 16) >= 0 for i in ids)


def test_tool_result_and_keep_calling() -> None:
    tools = [{"type": "function", "function": {"name": "calculator"}}]
    call = {"id": "call_x", "type": "function", "function": {"name": "calculator"}}
    turn: list[dict[str, Any]] = [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_x", "content": "  5\n\n  apples " + "x" * 300},
    ]
    done = build_reply([{"role": "user", "content": "calculate 2+3"}, *turn], tools)
    assert done.text == "Tool result: 5 apples " + "x" * (200 - len("5 apples "))
    again = build_reply([{"role": "user", "content": "Keep Calling: calculate 2+3"}, *turn], tools)
    assert again.tool_calls and again.tool_calls[0].name == "calculator"
    assert again.tool_calls[0].id != "call_x"


# --- over HTTP ---------------------------------------------------------------


def test_health_and_models(local_model: LocalModel) -> None:
    assert httpx.get(f"{local_model.url}/health", trust_env=False).status_code == 200
    models = httpx.get(f"{local_model.base_url}/models", trust_env=False).json()
    assert "local-model" in [m["id"] for m in models["data"]]


async def test_non_stream_text(llm: ChatOpenAI) -> None:
    reply = await llm.ainvoke("hello there")
    assert reply.content == 'You said: "hello there".'
    assert reply.usage_metadata and reply.usage_metadata["output_tokens"] == 4


async def test_stream_text_with_history_and_system(llm: ChatOpenAI) -> None:
    messages = [
        SystemMessage("You are terse."),
        HumanMessage("My name is Ada"),
        AIMessage("Hi Ada"),
        HumanMessage("What is my name?"),
    ]
    chunks = [c async for c in llm.astream(messages, stream_usage=True)]
    text = "".join(str(c.content) for c in chunks)
    assert text == (
        'You said: "What is my name?". Earlier you said: "My name is Ada".'
        ' (system prompt: "You are terse.")'
    )
    assert sum(1 for c in chunks if c.content) >= 10
    assert any(c.usage_metadata for c in chunks)


@pytest.mark.parametrize("streaming", [False, True])
async def test_tool_calls(llm: ChatOpenAI, streaming: bool) -> None:
    with_tools = llm.bind_tools([calculator, fetch_url])
    prompt = 'call calculator({"expression": "sqrt(16) + (2*3)"})'
    reply = await with_tools.ainvoke(prompt, stream=streaming)
    assert isinstance(reply, AIMessage)
    [call] = reply.tool_calls
    assert call["name"] == "calculator"
    assert call["args"] == {"expression": "sqrt(16) + (2*3)"}
    assert call["id"] and call["id"].startswith("call_") and len(call["id"]) == 29
    assert reply.response_metadata["finish_reason"] == "tool_calls"


async def test_streamed_tool_call_arrives_in_pieces(llm: ChatOpenAI) -> None:
    with_tools = llm.bind_tools([calculator, fetch_url])
    chunks = [c async for c in with_tools.astream("please read https://example.com/x, thanks")]
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    message_chunks = [c for c in chunks if isinstance(c, AIMessageChunk)]
    arg_pieces = [tc for c in message_chunks for tc in c.tool_call_chunks if tc["args"]]
    assert len(arg_pieces) >= 2
    total = message_chunks[0]
    for c in message_chunks[1:]:
        total += c
    assert total.tool_calls[0]["args"] == {"url": "https://example.com/x"}


async def test_latency_directive_delays_and_is_stripped(llm: ChatOpenAI) -> None:
    started = time.monotonic()
    reply = await llm.ainvoke("slow please [[latency=0.5]]")
    assert time.monotonic() - started >= 0.4
    assert reply.content == 'You said: "slow please".'


async def test_token_rate_directive_paces_stream(llm: ChatOpenAI) -> None:
    started = time.monotonic()
    arrivals = []
    async for chunk in llm.astream("one two three four five [[token_rate=10]]"):
        if chunk.content:
            arrivals.append(time.monotonic() - started)
    # 'You said: "one two three four five".' is 7 tokens: 6 gaps of 0.1 s.
    assert len(arrivals) == 7
    assert arrivals[-1] - arrivals[0] >= 0.5


async def test_fault_429_carries_retry_after(
    local_model: LocalModel, client: openai.AsyncOpenAI
) -> None:
    await local_model.ainject_faults([{"kind": "429", "retry_after": 0.3}])
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="local-model", messages=USER)
    assert caught.value.response.headers["retry-after"] == "0.3"
    assert caught.value.code == "rate_limit_exceeded"
    # The queue held one fault: the next request is served normally.
    ok = await client.chat.completions.create(model="local-model", messages=USER)
    assert ok.choices[0].message.content == 'You said: "hello".'


async def test_fault_429_is_retried_by_default(
    local_model: LocalModel, retrying_client: openai.AsyncOpenAI
) -> None:
    await local_model.ainject_faults([{"kind": "429", "retry_after": 0.1}, {"kind": "500"}])
    ok = await retrying_client.chat.completions.create(model="local-model", messages=USER)
    assert ok.choices[0].message.content == 'You said: "hello".'
    assert await local_model.astats() == {
        "requests": 3,
        "faults_served": 2,
        "in_flight": 0,
    }


async def test_fault_500(local_model: LocalModel, client: openai.AsyncOpenAI) -> None:
    await local_model.ainject_faults([{"kind": "500"}])
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="local-model", messages=USER)


@pytest.mark.parametrize("stream", [False, True])
async def test_fault_drop_is_a_connection_error(
    local_model: LocalModel, client: openai.AsyncOpenAI, stream: bool
) -> None:
    await local_model.ainject_faults([{"kind": "drop"}])
    with pytest.raises(openai.APIConnectionError) as caught:
        await client.chat.completions.create(model="local-model", messages=USER, stream=stream)
    assert not isinstance(caught.value, openai.APITimeoutError)


async def test_fault_hang_times_out_client(
    local_model: LocalModel, impatient_client: openai.AsyncOpenAI
) -> None:
    await local_model.ainject_faults([{"kind": "hang", "seconds": 5}])
    with pytest.raises(openai.APITimeoutError):
        await impatient_client.chat.completions.create(model="local-model", messages=USER)
    await _wait_idle(local_model)  # the server noticed the client leave


async def test_stats_count_requests(local_model: LocalModel, llm: ChatOpenAI) -> None:
    await local_model.areset()
    await asyncio.gather(*(llm.ainvoke(f"n{i}") for i in range(3)))
    stats = await local_model.astats()
    assert (stats["requests"], stats["faults_served"], stats["in_flight"]) == (3, 0, 0)


async def test_abandoned_stream_is_cancelled(
    local_model: LocalModel, client: openai.AsyncOpenAI
) -> None:
    stream = await client.chat.completions.create(
        model="local-model",
        messages=[{"role": "user", "content": "x [[token_rate=2]]"}],
        stream=True,
    )
    async for _ in stream:
        break
    assert (await local_model.astats())["in_flight"] == 1
    await stream.close()
    await _wait_idle(local_model)


async def test_many_concurrent_streams(llm: ChatOpenAI) -> None:
    async def one(i: int) -> str:
        text = ""
        async for chunk in llm.astream(f"req {i} [[latency=0.2]] [[token_rate=20]]"):
            text += str(chunk.content)
        return text

    replies = await asyncio.gather(*(one(i) for i in range(200)))
    assert replies == [f'You said: "req {i}".' for i in range(200)]


def test_bad_requests_get_openai_shaped_errors(local_model: LocalModel) -> None:
    url = f"{local_model.base_url}/chat/completions"
    bad = httpx.post(url, content=b"{not json", trust_env=False)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    faults = httpx.post(f"{local_model.url}/control/faults", json={"faults": [{"kind": "x"}]})
    assert faults.status_code == 400


async def _wait_idle(lm: LocalModel, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while (await lm.astats())["in_flight"]:
        assert time.monotonic() < deadline, "server still busy with an abandoned request"
        await asyncio.sleep(0.05)
