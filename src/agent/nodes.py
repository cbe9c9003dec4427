"""Graph nodes. Each is ``async def`` and awaits everything that does I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from agent.context import Context, context_of
from agent.model import respond
from agent.prompts import system_prompt
from agent.state import State
from agent.tools import TOOLS

OUT_OF_TOOL_ROUNDS = (
    "You have used all {limit} tool steps allowed for this turn. Do not call tools. "
    "Answer the user now with what you have, and say briefly what you could not finish."
)


async def load_prompt(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Fetch (or reuse the cached) system prompt for this turn."""
    return {"system_prompt": await system_prompt(context_of(runtime.context))}


def tool_rounds_this_turn(messages: Sequence[AnyMessage]) -> int:
    """Model replies with tool calls since the latest user message."""
    rounds = 0
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, AIMessage) and message.tool_calls:
            rounds += 1
    return rounds


async def call_model(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask the model for the next step; past the tool budget it must answer in words."""
    context = context_of(runtime.context)
    allow_tools = tool_rounds_this_turn(state.messages) < context.max_tool_rounds
    prompt: list[AnyMessage] = [SystemMessage(state.system_prompt), *state.messages]
    if not allow_tools:
        prompt.append(SystemMessage(OUT_OF_TOOL_ROUNDS.format(limit=context.max_tool_rounds)))
    reply = await respond(context, prompt, TOOLS, allow_tool_calls=allow_tools)
    return {"messages": [reply]}


def route_after_model(state: State) -> Literal["tools", "__end__"]:
    last = state.messages[-1] if state.messages else None
    if isinstance(last, AIMessage) and last.tool_calls:
        return "tools"
    return "__end__"
