"""The chat model: built once per event loop, called with async retries.

langchain-openai caches one async HTTP client for the whole process, bound to the
first loop that used it; any other loop (``BG_JOB_ISOLATED_LOOPS=true``, tests,
per-call ``asyncio.run``) then fails with "Event loop is closed". Passing our own
``http_async_client`` per loop avoids that cache entirely.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import httpx
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from agent.context import Context
from agent.loop_local import LoopLocal
from agent.retry import Backoff, with_retries

logger = logging.getLogger(__name__)

# Read once at import. Never logged.
_API_KEY = os.environ.get("OPENAI_API_KEY", "")
# Custom endpoints such as the bundled local model accept any key.
_PLACEHOLDER_KEY = "no-key-needed-for-custom-base-url"

ToolModel = Runnable[LanguageModelInput, BaseMessage]


class ModelNotConfigured(RuntimeError):
    """No API key and no custom endpoint: nothing to talk to."""


def _api_key(base_url: str) -> SecretStr:
    if _API_KEY:
        return SecretStr(_API_KEY)
    if base_url:
        return SecretStr(_PLACEHOLDER_KEY)
    raise ModelNotConfigured(
        "OPENAI_API_KEY is not set and no base URL is configured. Set OPENAI_API_KEY, "
        "or point OPENAI_BASE_URL at an OpenAI-compatible server (`make dev` starts the "
        "bundled local model and does this for you)."
    )


def _build_chat_model(
    model: str, base_url: str, temperature: float, timeout_s: float
) -> ChatOpenAI:
    # Runs in a worker thread: creating clients reads CA certificates from disk.
    return ChatOpenAI(
        model=model,
        base_url=base_url or None,
        api_key=_api_key(base_url),
        temperature=temperature,
        timeout=timeout_s,
        max_retries=0,  # retries are ours: async, jittered, Retry-After aware, bounded
        stream_usage=True,
        http_async_client=httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=500, max_keepalive_connections=100),
        ),
    )


_chat_models: LoopLocal[ChatOpenAI] = LoopLocal(_build_chat_model)


async def chat_model(context: Context) -> ChatOpenAI:
    """This loop's client for the context's model settings."""
    return await _chat_models.get(
        context.model, context.base_url, context.temperature, context.model_timeout_s
    )


def backoff_for(context: Context) -> Backoff:
    return Backoff(max_attempts=context.model_max_attempts, budget_s=context.model_retry_budget_s)


async def respond(
    context: Context,
    messages: Sequence[BaseMessage],
    tools: Sequence[BaseTool],
    *,
    allow_tool_calls: bool,
) -> AIMessage:
    """One model turn. Tokens stream to LangGraph's ``messages`` mode via callbacks."""
    model = await chat_model(context)
    bound: ToolModel = model.bind_tools(
        list(tools), tool_choice=None if allow_tool_calls else "none"
    )
    reply = await with_retries(lambda: bound.ainvoke(list(messages)), backoff_for(context))
    if not isinstance(reply, AIMessage):
        raise TypeError(f"Expected an AIMessage from the model, got {type(reply).__name__}")
    return reply
