"""Offline OpenAI-compatible chat model server for tests, benchmarks and demos.

Run it with ``python -m localmodel`` and point any OpenAI client at
``http://127.0.0.1:8765/v1`` with any API key. Replies are deterministic; see
:mod:`localmodel.replies` for the rules.
"""

from localmodel.replies import Reply, ToolCall, build_reply
from localmodel.server import DEFAULT_MODEL, LocalModelApp, Settings, create_app

__all__ = [
    "DEFAULT_MODEL",
    "LocalModelApp",
    "Reply",
    "Settings",
    "ToolCall",
    "build_reply",
    "create_app",
]
