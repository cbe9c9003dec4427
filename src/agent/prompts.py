"""System prompt sources: a project file, an http(s) URL, or a LangSmith prompt.

Fetched prompts are cached per source for ``prompt_cache_ttl_s``. Nothing here
blocks the loop: files are read in a worker thread, URLs go through the guarded
async client, and LangSmith through its async client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from langsmith import AsyncClient  # already loaded by langchain-core; import is free

from agent.context import Context
from agent.ssrf import FetchRefused
from agent.web import FetchFailed, guarded_get

logger = logging.getLogger(__name__)

# Resolved at import so runs never call os.getcwd (Path.resolve does).
PROJECT_DIR = Path(os.environ.get("AGENT_PROJECT_DIR") or Path(__file__).parents[2]).resolve()


class PromptUnavailable(RuntimeError):
    """The prompt source failed and no fallback is configured."""


@dataclass(frozen=True)
class _Cached:
    text: str
    expires_at: float


# Keyed by source and allowlist: a run whose allowlist refuses an address must not
# be served what another run's wider allowlist fetched. Plain data, shared by loops.
_Key = tuple[str, tuple[str, ...]]
_cache: dict[_Key, _Cached] = {}


def clear_cache() -> None:
    _cache.clear()


# Fetches in progress, per event loop (futures belong to one loop), so that many
# runs missing the cache at once share one fetch instead of stampeding the source.
_in_flight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_Key, asyncio.Task[str]]] = (
    weakref.WeakKeyDictionary()
)


async def system_prompt(context: Context) -> str:
    """The system prompt for this run: cached, fetched, or the configured fallback."""
    source = context.prompt_source.strip()
    key = (source, tuple(sorted(context.fetch_allowlist)))
    cached = _cache.get(key)
    if cached is not None and cached.expires_at > time.monotonic():
        return cached.text
    try:
        return await asyncio.shield(_shared_fetch(key, context))
    except (PromptUnavailable, FetchRefused, FetchFailed) as error:
        if context.prompt_fallback:
            logger.warning("Using the fallback system prompt: %s", error)
            return context.prompt_fallback
        raise PromptUnavailable(f"Could not load the system prompt: {error}") from error


def _shared_fetch(key: _Key, context: Context) -> asyncio.Task[str]:
    fetches = _in_flight.setdefault(asyncio.get_running_loop(), {})
    task = fetches.get(key)
    if task is None:
        task = asyncio.create_task(_fetch_and_cache(key, context))
        fetches[key] = task
        task.add_done_callback(lambda _: fetches.pop(key, None))
    return task


async def _fetch_and_cache(key: _Key, context: Context) -> str:
    text = await _fetch(key[0], context)
    _cache[key] = _Cached(text=text, expires_at=time.monotonic() + context.prompt_cache_ttl_s)
    return text


async def _fetch(source: str, context: Context) -> str:
    if source.startswith("file:"):
        return await _read_project_file(source.removeprefix("file:"))
    if source.startswith(("http://", "https://")):
        result = await guarded_get(
            source,
            allowlist=context.fetch_allowlist,
            max_bytes=context.fetch_max_bytes,
            timeout_s=context.fetch_timeout_s,
        )
        if result.truncated:
            raise PromptUnavailable(
                f"{source} is larger than fetch_max_bytes ({context.fetch_max_bytes})."
            )
        return result.text
    if source.startswith("langsmith:"):
        return await _pull_langsmith(source.removeprefix("langsmith:"))
    raise PromptUnavailable(
        f"Unknown prompt source {source!r}: use 'file:<path>', an http(s) URL, "
        "or 'langsmith:<name>'."
    )


def _project_path(relative: str) -> Path:
    # normpath is pure string work; no filesystem access, no getcwd.
    path = Path(os.path.normpath(PROJECT_DIR / relative))
    if not path.is_relative_to(PROJECT_DIR):
        raise PromptUnavailable(f"Prompt files must be inside the project: {relative!r}.")
    return path


async def _read_project_file(relative: str) -> str:
    path = _project_path(relative)
    try:
        return await asyncio.to_thread(path.read_text, encoding="utf-8")
    except OSError as error:
        raise PromptUnavailable(
            f"Cannot read prompt file {path}: {error.strerror or error}"
        ) from error


async def _pull_langsmith(name: str) -> str:
    if not os.environ.get("LANGSMITH_API_KEY"):
        raise PromptUnavailable(
            f"Prompt source 'langsmith:{name}' needs LANGSMITH_API_KEY to be set."
        )
    client = await asyncio.to_thread(AsyncClient)
    try:
        prompt = await client.pull_prompt(name)
    except Exception as error:  # the SDK raises many types; report them all alike
        raise PromptUnavailable(f"LangSmith prompt {name!r} failed: {error}") from error
    finally:
        await client.aclose()  # type: ignore[no-untyped-call]
    return _prompt_text(prompt)


def _prompt_text(prompt: object) -> str:
    """The system text of a pulled ChatPromptTemplate or PromptTemplate."""
    template = getattr(prompt, "template", None)
    if isinstance(template, str):
        return template
    for message in getattr(prompt, "messages", []):
        inner = getattr(getattr(message, "prompt", None), "template", None)
        if isinstance(inner, str):
            return inner
    raise PromptUnavailable("The LangSmith prompt has no text template to use.")
