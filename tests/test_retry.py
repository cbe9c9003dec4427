"""Model-call retries against real HTTP failures from the local model server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage

from agent.model import respond
from agent.retry import Backoff, retry_after_seconds, with_retries
from tests.agent_context import local_context
from tests.support.localmodel import LocalModel

HELLO = [HumanMessage("hello")]


@pytest.fixture
async def model(local_model: LocalModel) -> AsyncIterator[LocalModel]:
    await local_model.areset()
    yield local_model
    await local_model.areset()


async def test_429_is_retried_after_retry_after(model: LocalModel) -> None:
    await model.ainject_faults([{"kind": "429", "retry_after": 0.4}])
    started = time.monotonic()
    reply = await respond(local_context(model), HELLO, [], allow_tool_calls=False)
    assert reply.content.startswith('You said: "hello"')
    assert time.monotonic() - started >= 0.4, "Retry-After must be honoured"
    assert (await model.astats())["requests"] == 2


async def test_500_and_dropped_connection_are_retried(model: LocalModel) -> None:
    await model.ainject_faults([{"kind": "500"}, {"kind": "drop"}])
    reply = await respond(local_context(model), HELLO, [], allow_tool_calls=False)
    assert reply.content.startswith('You said: "hello"')
    assert (await model.astats())["requests"] == 3


async def test_attempts_are_bounded(model: LocalModel) -> None:
    await model.ainject_faults([{"kind": "500"}] * 5)
    with pytest.raises(openai.InternalServerError):
        await respond(local_context(model, model_max_attempts=2), HELLO, [], allow_tool_calls=False)
    assert (await model.astats())["requests"] == 2


async def test_retry_after_beyond_the_budget_fails_fast(model: LocalModel) -> None:
    await model.ainject_faults([{"kind": "429", "retry_after": 30}])
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError):
        await respond(
            local_context(model, model_retry_budget_s=2), HELLO, [], allow_tool_calls=False
        )
    assert time.monotonic() - started < 30
    assert (await model.astats())["requests"] == 1


async def test_hung_request_times_out(model: LocalModel) -> None:
    await model.ainject_faults([{"kind": "hang", "seconds": 30}])
    with pytest.raises(openai.APITimeoutError):
        await respond(
            local_context(model, model_timeout_s=0.3, model_max_attempts=1),
            HELLO,
            [],
            allow_tool_calls=False,
        )


async def test_total_budget_bounds_a_hang_even_with_attempts_left(model: LocalModel) -> None:
    await model.ainject_faults([{"kind": "hang", "seconds": 30}])
    with pytest.raises(TimeoutError, match="within its 0.5 s budget"):
        await respond(
            local_context(model, model_retry_budget_s=0.5, model_timeout_s=20),
            HELLO,
            [],
            allow_tool_calls=False,
        )


async def _wait_for_requests(model: LocalModel, count: int) -> None:
    async with asyncio.timeout(10):
        while (await model.astats())["requests"] < count:
            await asyncio.sleep(0.02)


async def test_cancelled_while_waiting_to_retry_is_not_retried(model: LocalModel) -> None:
    await model.ainject_faults([{"kind": "429", "retry_after": 3}])
    call = asyncio.create_task(respond(local_context(model), HELLO, [], allow_tool_calls=False))
    await _wait_for_requests(model, 1)
    await asyncio.sleep(0.1)  # now sleeping in backoff
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.5)
    assert (await model.astats())["requests"] == 1


async def test_cancelled_mid_request_is_not_retried(model: LocalModel) -> None:
    await model.ainject_faults([{"kind": "hang", "seconds": 30}])
    call = asyncio.create_task(respond(local_context(model), HELLO, [], allow_tool_calls=False))
    await _wait_for_requests(model, 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.5)
    assert (await model.astats())["requests"] == 1


async def test_non_retryable_errors_are_raised_at_once() -> None:
    calls = 0

    async def bad_request() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("not transient")

    with pytest.raises(ValueError, match="not transient"):
        await with_retries(bad_request, Backoff(max_attempts=5))
    assert calls == 1


def _error_with_headers(headers: dict[str, str]) -> openai.RateLimitError:
    request = httpx.Request("POST", "http://model/v1/chat/completions")
    response = httpx.Response(429, headers=headers, request=request)
    return openai.RateLimitError("slow down", response=response, body=None)


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds(_error_with_headers({"retry-after": "2"})) == 2
    assert retry_after_seconds(_error_with_headers({"retry-after-ms": "250"})) == 0.25
    http_date = _error_with_headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_after_seconds(http_date) == 0  # in the past: retry now
    assert retry_after_seconds(_error_with_headers({})) is None
    assert retry_after_seconds(ValueError()) is None


def test_backoff_is_jittered_and_capped() -> None:
    backoff = Backoff(initial_s=1, max_s=4)
    no_hint = ValueError("x")
    delays = [backoff.delay(attempt, no_hint) for attempt in (1, 2, 3, 10) for _ in range(50)]
    assert all(0 <= d <= 4 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100, "delays must be jittered"
    assert max(backoff.delay(1, no_hint) for _ in range(200)) <= 1
