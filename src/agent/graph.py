"""The agent graph: load_prompt -> call_model <-> tools.

``graph`` is compiled WITHOUT a checkpointer: ``langgraph dev`` and LangGraph
servers refuse or replace one. The self-hosted server and tests call
``build_graph(saver)`` instead.
"""

from __future__ import annotations

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agent.context import Context
from agent.nodes import call_model, load_prompt, route_after_model
from agent.state import InputState, State
from agent.tools import tool_node

builder = (
    StateGraph(State, input_schema=InputState, context_schema=Context)
    .add_node("load_prompt", load_prompt)
    .add_node("call_model", call_model)
    .add_node("tools", tool_node())
    .add_edge(START, "load_prompt")
    .add_edge("load_prompt", "call_model")
    .add_conditional_edges("call_model", route_after_model, ["tools", "__end__"])
    .add_edge("tools", "call_model")
)

AgentGraph = CompiledStateGraph[State, Context, InputState, State]


def build_graph(checkpointer: BaseCheckpointSaver[str] | None = None) -> AgentGraph:
    return builder.compile(checkpointer=checkpointer, name="agent")


graph = build_graph()
