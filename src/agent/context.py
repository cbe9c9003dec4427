"""Runtime settings for one run, editable per run in LangGraph Studio.

Defaults come from environment variables, read once at import (never during a
run). Every field's ``description`` is what Studio shows next to it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

LOCAL_MODEL_NAME = "local-model"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())


_DEFAULT_FETCH_ALLOWLIST = _env_list("AGENT_FETCH_ALLOWLIST")


def _describe(text: str, default: Any) -> Any:
    return field(default=default, metadata={"description": text})


@dataclass(kw_only=True)
class Context:
    """Per-run configuration of the agent (langgraph ``context_schema``)."""

    model: str = _describe(
        "Chat model name sent to the OpenAI-compatible API. Env: AGENT_MODEL.",
        _env("AGENT_MODEL", "gpt-4o-mini"),
    )
    base_url: str = _describe(
        "OpenAI-compatible API base URL; empty means api.openai.com. Env: OPENAI_BASE_URL.",
        _env("OPENAI_BASE_URL", ""),
    )
    temperature: float = _describe(
        "Sampling temperature, 0 to 2. Env: AGENT_TEMPERATURE.",
        float(_env("AGENT_TEMPERATURE", "0")),
    )
    model_timeout_s: float = _describe(
        "Timeout for one model request, in seconds. Env: AGENT_MODEL_TIMEOUT.",
        float(_env("AGENT_MODEL_TIMEOUT", "60")),
    )
    model_max_attempts: int = _describe(
        "Attempts per model call (429/5xx/connection errors are retried). "
        "Env: AGENT_MODEL_MAX_ATTEMPTS.",
        int(_env("AGENT_MODEL_MAX_ATTEMPTS", "4")),
    )
    model_retry_budget_s: float = _describe(
        "Total time a model call may spend including retries and backoff. "
        "Env: AGENT_MODEL_RETRY_BUDGET.",
        float(_env("AGENT_MODEL_RETRY_BUDGET", "120")),
    )
    prompt_source: str = _describe(
        "Where the system prompt comes from: 'file:<path>' (relative to the project), "
        "an http(s) URL, or 'langsmith:<prompt name>'. Env: AGENT_PROMPT_SOURCE.",
        _env("AGENT_PROMPT_SOURCE", "file:src/agent/system_prompt.md"),
    )
    prompt_fallback: str = _describe(
        "System prompt to use when the source cannot be fetched; empty means fail "
        "the run with a clear error. Env: AGENT_PROMPT_FALLBACK.",
        _env("AGENT_PROMPT_FALLBACK", ""),
    )
    prompt_cache_ttl_s: float = _describe(
        "How long a fetched prompt is reused, in seconds. Env: AGENT_PROMPT_TTL.",
        float(_env("AGENT_PROMPT_TTL", "300")),
    )
    max_tool_rounds: int = _describe(
        "Model->tools round trips allowed per user turn before the agent must answer. "
        "Env: AGENT_MAX_TOOL_ROUNDS.",
        int(_env("AGENT_MAX_TOOL_ROUNDS", "5")),
    )
    fetch_allowlist: list[str] = field(
        default_factory=lambda: list(_DEFAULT_FETCH_ALLOWLIST),
        metadata={
            "description": "Hosts or CIDR ranges the fetch tool may reach even though they "
            "are private/loopback (e.g. 'intranet.local', '10.0.0.0/8'). "
            "Env: AGENT_FETCH_ALLOWLIST (comma separated)."
        },
    )
    fetch_max_bytes: int = _describe(
        "Largest response body the fetch tool (and URL prompts) will read. "
        "Env: AGENT_FETCH_MAX_BYTES.",
        int(_env("AGENT_FETCH_MAX_BYTES", "200000")),
    )
    fetch_timeout_s: float = _describe(
        "Total time allowed for one fetch, in seconds. Env: AGENT_FETCH_TIMEOUT.",
        float(_env("AGENT_FETCH_TIMEOUT", "10")),
    )

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.temperature <= 2:
            problems.append(f"temperature must be between 0 and 2, got {self.temperature}")
        for name in ("model_timeout_s", "model_retry_budget_s", "fetch_timeout_s"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive")
        for name in ("model_max_attempts", "max_tool_rounds", "fetch_max_bytes"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if problems:
            raise ValueError("Invalid agent context: " + "; ".join(problems))


def context_of(value: Context | None) -> Context:
    """The run's context, or the env defaults when the caller passed none."""
    return value if value is not None else Context()
