"""Async retries for model calls: exponential backoff with full jitter, honouring
``Retry-After``, within one total time budget.

Why not langgraph's ``RetryPolicy``: it ignores ``Retry-After`` and has no total
time bound. Like it, we only ever catch ``Exception``; ``asyncio.CancelledError``
is a ``BaseException`` and always propagates, so cancelling a run never retries it.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
import openai

T = TypeVar("T")
logger = logging.getLogger(__name__)

RETRYABLE = (
    openai.RateLimitError,  # 429
    openai.InternalServerError,  # 5xx
    openai.APIConnectionError,  # dropped connection, DNS, refused; includes timeouts
    httpx.TransportError,
)


@dataclass(frozen=True)
class Backoff:
    max_attempts: int = 4
    initial_s: float = 0.5
    max_s: float = 20.0
    budget_s: float = 120.0
    """Total time for all attempts and waits; a wait that would overrun it is skipped
    and the last error is raised instead."""

    def delay(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait after failed ``attempt`` (1-based)."""
        hinted = retry_after_seconds(error)
        if hinted is not None:
            return min(hinted, self.max_s * 4)
        # Full jitter spreads synchronized clients apart after a shared outage.
        ceiling = min(self.max_s, self.initial_s * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)


def retry_after_seconds(error: BaseException) -> float | None:
    """The server's requested wait, from ``retry-after-ms`` or ``Retry-After``."""
    response = getattr(error, "response", None)
    if not isinstance(response, httpx.Response):
        return None
    headers = response.headers
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def loop_deadline(monotonic_deadline: float) -> float:
    """Convert a time.monotonic() deadline to the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


def is_retryable(error: Exception) -> bool:
    return isinstance(error, RETRYABLE)


async def with_retries(call: Callable[[], Awaitable[T]], backoff: Backoff) -> T:
    """Await ``call()`` until it succeeds, a non-retryable error, or the budget ends."""
    deadline = time.monotonic() + backoff.budget_s
    attempt = 0
    while True:
        attempt += 1
        budget = asyncio.timeout_at(loop_deadline(deadline))
        try:
            async with budget:
                return await call()
        except TimeoutError as error:
            if not budget.expired():
                raise
            raise TimeoutError(
                f"Model call did not finish within its {backoff.budget_s:g} s budget "
                f"(attempt {attempt} of {backoff.max_attempts})."
            ) from error
        except Exception as error:
            if not is_retryable(error) or attempt >= backoff.max_attempts:
                raise
            wait = backoff.delay(attempt, error)
            if time.monotonic() + wait >= deadline:
                logger.warning("Model call failed; no retry budget left: %s", error)
                raise
            logger.warning(
                "Model call failed (attempt %d/%d, retrying in %.2fs): %s",
                attempt,
                backoff.max_attempts,
                wait,
                error,
            )
            await asyncio.sleep(wait)
