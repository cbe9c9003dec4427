"""Graph state. The input is plain chat messages, which Studio's chat view sends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages


@dataclass
class InputState:
    """What callers send: ``{"messages": [{"role": "user", "content": "..."}]}``."""

    messages: Annotated[list[AnyMessage], add_messages] = field(default_factory=list)


@dataclass
class State(InputState):
    """Internal state: the input plus the system prompt fetched for this turn."""

    system_prompt: str = ""
