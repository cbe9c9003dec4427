"""Negative control for the dev-server tests: the common wrong way to write a node.

``langgraph dev`` must reject this run with BlockingError; if it did not, the
end-to-end tests' "no BlockingError in the log" check would prove nothing.
"""

from __future__ import annotations

import time
from typing import TypedDict

from langgraph.graph import START, StateGraph


class Counter(TypedDict):
    n: int


async def sleeps_on_the_loop(state: Counter) -> Counter:
    time.sleep(0.05)  # deliberately blocking
    return {"n": state["n"] + 1}


graph = (
    StateGraph(Counter)
    .add_node("sleeps_on_the_loop", sleeps_on_the_loop)
    .add_edge(START, "sleeps_on_the_loop")
    .compile(name="blocking")
)
