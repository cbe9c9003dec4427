"""Deterministic reply logic: pure functions from a chat request to a reply.

Other test suites assert on these exact strings, so changes here are API changes.

``user_text`` is the last user message with ``[[key=value]]`` directives removed;
``tools`` are the offered tool names (none when ``tool_choice == "none"``).

1. Last message is a tool result: reply ``Tool result: <content, whitespace
   collapsed, first 200 chars>`` -- unless ``user_text`` says "keep calling" and
   rule 2 still matches, in which case that tool is called again.
2. Otherwise, first match wins: ``call NAME({json})`` / ``call NAME()`` for an
   offered NAME; an http(s) URL when ``fetch_url`` is offered; ``calculate
   <expr>`` when ``calculator`` is offered.
3. Otherwise ``You said: "<user_text>".``, then `` Earlier you said: "<previous
   user message>".`` if there is one, then `` (system prompt: "<first 60
   chars>")`` if there is a system message.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_DIRECTIVE = re.compile(r"\[\[\s*([A-Za-z_]+)\s*=\s*([^\]]*?)\s*\]\][ \t]*")
_CALL = re.compile(r"\bcall\s+([A-Za-z_][\w.-]*)\(", re.IGNORECASE)
_URL = re.compile(r"https?://\S+")
_URL_TRAILING = ".,;:!?)]}>'\""
_CALCULATE = re.compile(r"\bcalculate\s+(.+)", re.IGNORECASE)
_KEEP_CALLING = re.compile(r"keep calling", re.IGNORECASE)
# Leading whitespace is its own token so that "".join(tokens) == text.
_TOKEN = re.compile(r"^\s+|\S+\s*")
_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass(frozen=True)
class Reply:
    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    directives: Mapping[str, float] = field(default_factory=dict)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def content_text(content: Any) -> str:
    """String content as-is; list content as its concatenated text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [
            str(p.get("text", ""))
            for p in content
            if isinstance(p, Mapping) and p.get("type") in ("text", "input_text")
        ]
        return "".join(parts)
    return ""


def parse_directives(text: str) -> dict[str, float]:
    """``[[latency=2.5]]``-style numeric settings; malformed values are ignored."""
    found: dict[str, float] = {}
    for key, value in _DIRECTIVE.findall(text):
        try:
            number = float(value)
        except ValueError:
            continue
        if number >= 0 and number != float("inf"):
            found[key.lower()] = number
    return found


def strip_directives(text: str) -> str:
    return _DIRECTIVE.sub("", text).strip()


def split_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def offered_tools(tools: Any, tool_choice: Any) -> list[str]:
    if tool_choice == "none" or not isinstance(tools, Sequence):
        return []
    names: list[str] = []
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        function = tool.get("function")
        name = function.get("name") if isinstance(function, Mapping) else tool.get("name")
        if isinstance(name, str):
            names.append(name)
    return names


def _explicit_call(text: str, tools: Sequence[str]) -> tuple[str, str] | None:
    decoder = json.JSONDecoder()
    for match in _CALL.finditer(text):
        name = match.group(1)
        if name not in tools:
            continue
        rest = text[match.end() :].lstrip()
        if rest.startswith(")"):
            return name, "{}"
        try:
            args, end = decoder.raw_decode(rest)
        except ValueError:
            continue
        if isinstance(args, dict) and rest[end:].lstrip().startswith(")"):
            return name, json.dumps(args)
    return None


def match_tool_call(text: str, tools: Sequence[str]) -> tuple[str, str] | None:
    """The tool-call rules in priority order: (name, JSON arguments) or None."""
    if not tools:
        return None
    explicit = _explicit_call(text, tools)
    if explicit:
        return explicit
    if "fetch_url" in tools and (url := _URL.search(text)):
        stripped = url.group(0).rstrip(_URL_TRAILING)
        if len(stripped) > len("https://"):
            return "fetch_url", json.dumps({"url": stripped})
    if "calculator" in tools and (calc := _CALCULATE.search(text)):
        expression = calc.group(1).strip().rstrip("?.").strip()
        if expression:
            return "calculator", json.dumps({"expression": expression})
    return None


def _user_texts(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    return [content_text(m.get("content")) for m in messages if m.get("role") == "user"]


def build_reply(
    messages: Sequence[Mapping[str, Any]], tools: Any = None, tool_choice: Any = None
) -> Reply:
    """The whole reply contract; the rules are in the module docstring."""
    user_texts = _user_texts(messages)
    raw_user_text = user_texts[-1] if user_texts else ""
    directives = parse_directives(raw_user_text)
    user_text = strip_directives(raw_user_text)
    names = offered_tools(tools, tool_choice)
    last = messages[-1] if messages else {}

    if last.get("role") == "tool":
        call = match_tool_call(user_text, names) if _KEEP_CALLING.search(user_text) else None
        if call is None:
            result = _WS.sub(" ", content_text(last.get("content"))).strip()[:200]
            return Reply(text=f"Tool result: {result}", directives=directives)
    else:
        call = match_tool_call(user_text, names)
    if call is not None:
        return Reply(tool_calls=(ToolCall(new_call_id(), *call),), directives=directives)

    text = f'You said: "{user_text}".'
    if len(user_texts) >= 2:
        text += f' Earlier you said: "{strip_directives(user_texts[-2])}".'
    system = next((m for m in messages if m.get("role") in ("system", "developer")), None)
    if system is not None:
        text += f' (system prompt: "{content_text(system.get("content"))[:60]}")'
    return Reply(text=text, directives=directives)


def prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    chars = 0
    for m in messages:
        chars += len(content_text(m.get("content")))
        for call in m.get("tool_calls") or ():
            if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                chars += len(str(call["function"].get("arguments", "")))
    return max(1, chars // 4)
