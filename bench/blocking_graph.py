"""The same agent written the common WRONG way: ``async def`` nodes doing sync I/O.

Same shape and workload as ``agent.graph`` (prompt fetch -> model asks for
``fetch_url`` -> fetch -> model answers), but every call is a synchronous
``httpx.Client`` request and retries back off with ``time.sleep``. Each call
holds the event loop for its whole duration, so concurrent runs queue behind
one another: N runs take about N times one run.

(Sync ``def`` nodes would run in LangGraph's thread pool and hide the damage;
``async def`` wrapping sync calls is the mistake that actually ships.)

Settings come from the same env vars as the agent, read at import:
``OPENAI_BASE_URL``, ``AGENT_MODEL``, ``AGENT_PROMPT_SOURCE`` (an http URL).
Under ``langgraph dev`` it needs ``--allow-blocking`` (``bench/langgraph.blocking.json``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import httpx
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.graph import START, StateGraph

from agent.state import InputState, State

T = TypeVar("T")

BASE_URL = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8765/v1").rstrip("/")
MODEL = os.environ.get("AGENT_MODEL", "local-model")
PROMPT_URL = os.environ.get("AGENT_PROMPT_SOURCE", "")
ATTEMPTS = 4

FETCH_URL_TOOL = {
    "type": "function",
    "function": {
        "name": "fetch_url",
        "description": "Fetch a web page and return its text.",
        "parameters": {
            "type": "object",
            "properties": {"url": {"type": "string"}},
            "required": ["url"],
        },
    },
}

# One shared sync client, as such code usually has.
_client = httpx.Client(timeout=60, trust_env=False)


def _with_retries(call: Callable[[], T]) -> T:
    for attempt in range(ATTEMPTS):
        try:
            return call()
        except httpx.HTTPError:
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.5 * 2**attempt)  # blocks the loop, like the rest
    raise AssertionError("unreachable")


def _get_text(url: str) -> str:
    def get() -> str:
        response = _client.get(url)
        response.raise_for_status()
        return response.text

    return _with_retries(get)


def _fetch_page(url: str) -> str:
    """The tool's result, formatted like ``agent.tools.fetch_url``."""

    def get() -> str:
        response = _client.get(url)
        response.raise_for_status()
        content_type = response.headers.get("content-type", "")
        return f"HTTP {response.status_code} {content_type}\n{response.text}"

    return _with_retries(get)


def _as_openai(message: AnyMessage) -> dict[str, Any]:
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": message.content}
    if isinstance(message, HumanMessage):
        return {"role": "user", "content": message.content}
    if isinstance(message, ToolMessage):
        return {"role": "tool", "content": message.content, "tool_call_id": message.tool_call_id}
    if isinstance(message, AIMessage):
        calls = [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
            }
            for call in message.tool_calls
        ]
        reply: dict[str, Any] = {"role": "assistant", "content": message.content}
        if calls:
            reply["tool_calls"] = calls
        return reply
    raise TypeError(f"unsupported message {type(message).__name__}")


def _sse_chunks(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line.removeprefix("data: "))


def _stream_completion(messages: list[dict[str, Any]]) -> AIMessage:
    """POST /chat/completions with stream=true and assemble the reply from its chunks."""
    payload = {"model": MODEL, "messages": messages, "tools": [FETCH_URL_TOOL], "stream": True}
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}

    def post() -> None:
        text.clear()
        calls.clear()
        with _client.stream("POST", f"{BASE_URL}/chat/completions", json=payload) as response:
            response.raise_for_status()
            for chunk in _sse_chunks(response):
                for choice in chunk.get("choices", []):
                    delta = choice.get("delta", {})
                    text.append(delta.get("content") or "")
                    for call in delta.get("tool_calls") or []:
                        slot = calls.setdefault(call["index"], {"id": "", "name": "", "args": ""})
                        slot["id"] = call.get("id") or slot["id"]
                        function = call.get("function", {})
                        slot["name"] = function.get("name") or slot["name"]
                        slot["args"] += function.get("arguments") or ""

    _with_retries(post)
    tool_calls = [
        {"id": c["id"], "name": c["name"], "args": json.loads(c["args"] or "{}")}
        for _, c in sorted(calls.items())
    ]
    return AIMessage(content="".join(text), tool_calls=tool_calls)


async def load_prompt(state: State) -> dict[str, Any]:
    return {"system_prompt": _get_text(PROMPT_URL) if PROMPT_URL.startswith("http") else ""}


async def call_model(state: State) -> dict[str, Any]:
    messages = [SystemMessage(state.system_prompt), *state.messages]
    return {"messages": [_stream_completion([_as_openai(m) for m in messages])]}


async def tools(state: State) -> dict[str, Any]:
    last = state.messages[-1]
    assert isinstance(last, AIMessage)
    results = [
        ToolMessage(content=_fetch_page(call["args"]["url"]), tool_call_id=call["id"])
        for call in last.tool_calls
    ]
    return {"messages": results}


def route_after_model(state: State) -> Literal["tools", "__end__"]:
    last = state.messages[-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else "__end__"


builder = (
    StateGraph(State, input_schema=InputState)
    .add_node("load_prompt", load_prompt)
    .add_node("call_model", call_model)
    .add_node("tools", tools)
    .add_edge(START, "load_prompt")
    .add_edge("load_prompt", "call_model")
    .add_conditional_edges("call_model", route_after_model, ["tools", "__end__"])
    .add_edge("tools", "call_model")
)
graph = builder.compile(name="agent-blocking")
