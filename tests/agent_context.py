"""Build a Context that points the agent at the bundled local model."""

from __future__ import annotations

from typing import Any

from agent.context import LOCAL_MODEL_NAME, Context
from tests.support.localmodel import LocalModel


def local_context(model: LocalModel, **overrides: Any) -> Context:
    settings: dict[str, Any] = {
        "model": LOCAL_MODEL_NAME,
        "base_url": model.base_url,
        "prompt_source": "file:src/agent/system_prompt.md",
        "model_max_attempts": 4,
    }
    settings.update(overrides)
    return Context(**settings)
