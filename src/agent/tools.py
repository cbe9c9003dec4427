"""The agent's tools. All async; anything that touches disk or network is awaited.

Tool failures that the model can act on (refused URL, timeout, bad expression)
raise ``ToolError`` and come back to the model as a tool message. Anything else
propagates and fails the run, so bugs are not hidden from the model or from tests.
"""

from __future__ import annotations

import ast
import asyncio
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolNode, ToolRuntime

from agent.context import Context, context_of
from agent.ssrf import FetchRefused
from agent.state import State
from agent.web import FetchFailed, guarded_get


class ToolError(ValueError):
    """A failure the model should see and can recover from."""


@tool
async def fetch_url(url: str, runtime: ToolRuntime[Context, State]) -> str:
    """Fetch a public web page or API over http(s) and return its text (may be truncated).

    Private, loopback, link-local and cloud-metadata addresses are refused.
    """
    context = context_of(runtime.context)
    result = await guarded_get(
        url,
        allowlist=context.fetch_allowlist,
        max_bytes=context.fetch_max_bytes,
        timeout_s=context.fetch_timeout_s,
    )
    note = f" [truncated at {context.fetch_max_bytes} bytes]" if result.truncated else ""
    return f"HTTP {result.status_code} {result.content_type}{note}\n{result.text}"


_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_MAX_EXPRESSION = 200
_MAX_EXPONENT = 100


def evaluate(expression: str) -> float:
    """Evaluate plain arithmetic without ``eval``; anything else is a ToolError."""
    if len(expression) > _MAX_EXPRESSION:
        raise ToolError(f"Expression too long (max {_MAX_EXPRESSION} characters).")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as error:
        raise ToolError(f"Not an arithmetic expression: {expression!r}") from error

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            if isinstance(node.value, bool):
                raise ToolError("Booleans are not numbers here.")
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](walk(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
                raise ToolError(f"Exponent too large (max {_MAX_EXPONENT}).")
            try:
                return _BINARY[type(node.op)](left, right)
            except (ZeroDivisionError, OverflowError) as error:
                raise ToolError(f"Cannot compute {expression!r}: {error}") from error
        raise ToolError(f"Only numbers and + - * / // % ** are allowed in {expression!r}.")

    return walk(tree)


@tool
async def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '2 + 3 * (4 - 1)' or '2 ** 10'."""
    value = evaluate(expression)
    return f"{expression} = {value:g}"


@tool
async def current_time(timezone: str = "UTC") -> str:
    """The current date and time in an IANA time zone such as 'Europe/Paris'."""
    try:
        # The first lookup of a zone reads its file from disk.
        zone = await asyncio.to_thread(ZoneInfo, timezone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ToolError(f"Unknown time zone {timezone!r}; use a name like 'UTC'.") from error
    return datetime.now(UTC).astimezone(zone).isoformat(timespec="seconds")


TOOLS: list[BaseTool] = [fetch_url, calculator, current_time]


def tool_node() -> ToolNode:
    return ToolNode(TOOLS, handle_tool_errors=(ToolError, FetchRefused, FetchFailed))
