"""The self-hosted server: HTTP contract in-process, shutdown and crashes as real processes.

Real components throughout: PostgreSQL, AsyncPostgresSaver, the agent graph, the
local OpenAI-compatible model, the official ``langgraph_sdk`` client. Server
processes are started in sync fixtures or via ``asyncio.to_thread`` so the
blocking detector only ever sees the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client

from agent.__main__ import run_bounded
from agent.runs import ShutdownPolicy
from agent.server import Services, create_app, open_services
from tests.scenario import run_scenario
from tests.support.localmodel import LocalModel
from tests.support.processes import free_port
from tests.support.server import AgentServer, start_server

pytestmark = pytest.mark.e2e

DIRTY_SHUTDOWN_MARKERS = (
    "PoolClosed",
    "connection is closed",
    "unhandled exception during shutdown",
    "Traceback",
    "Exception in",
    "Task was destroyed",
)


def model_env(model: LocalModel, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "local",
        "AGENT_MODEL": "local-model",
        **extra,
    }


def user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


# -- in-process: the HTTP contract ------------------------------------------------------------


@pytest.fixture
async def api(
    fresh_database_url: str, local_model: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    monkeypatch.setenv("DATABASE_URL", fresh_database_url)
    async with open_services(ShutdownPolicy(timeout=3)) as services:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            yield client, services


def context_for(model: LocalModel) -> dict[str, Any]:
    # Context defaults are read from the env at import; point runs at the local model.
    return {"model": "local-model", "base_url": model.base_url}


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body.get("detail"), str), body
    assert "Traceback" not in response.text
    for word in words:
        assert word in body["detail"], body


async def test_http_errors_are_json_with_clear_messages(
    api: tuple[httpx.AsyncClient, Services], local_model: LocalModel
) -> None:
    client, _services = api
    missing = str(uuid.uuid4())
    assert_error(await client.get(f"/threads/{missing}"), 404, missing)
    assert_error(await client.get(f"/threads/{missing}/state"), 404, missing)
    run_body = {"assistant_id": "agent", "input": user("hi")}
    assert_error(await client.post(f"/threads/{missing}/runs", json=run_body), 404, missing)
    assert_error(await client.get("/assistants/nope"), 404, "nope")

    thread = (await client.post("/threads", json={})).json()
    tid = thread["thread_id"]
    assert_error(await client.get(f"/threads/{tid}/runs/{missing}"), 404, missing)
    assert_error(
        await client.post(f"/threads/{tid}/runs", json={**run_body, "assistant_id": "other"}),
        404,
        "other",
    )
    bad_json = await client.post(
        f"/threads/{tid}/runs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(bad_json, 422, "JSON")
    assert_error(
        await client.post(f"/threads/{tid}/runs", json={"assistant_id": "agent"}), 422, "input"
    )
    assert_error(
        await client.post(f"/threads/{tid}/runs", json={"assistant_id": "agent", "input": "hi"}),
        422,
        "input",
    )
    assert_error(
        await client.post(f"/threads/{tid}/runs", json={**run_body, "context": {"nope": 1}}),
        422,
        "context",
    )
    assert_error(
        await client.post(f"/threads/{tid}/runs", json={**run_body, "stream_mode": ["events"]}),
        422,
        "stream_mode",
    )
    assert_error(await client.post("/threads", json={"thread_id": tid}), 409, tid)

    # 409: reject while a run is active on the thread.
    slow = {
        "assistant_id": "agent",
        "input": user("slow [[latency=30]]"),
        "context": context_for(local_model),
    }
    first = await client.post(f"/threads/{tid}/runs", json=slow)
    assert first.status_code == 200, first.text
    run = first.json()
    assert run["status"] in ("pending", "running") and run["thread_id"] == tid
    rejected = await client.post(
        f"/threads/{tid}/runs", json={**slow, "multitask_strategy": "reject"}
    )
    assert_error(rejected, 409, run["run_id"])
    cancel = await client.post(f"/threads/{tid}/runs/{run['run_id']}/cancel?wait=1")
    assert cancel.status_code == 200 and "__error__" in cancel.json()
    assert (await client.get(f"/threads/{tid}/runs/{run['run_id']}")).json()[
        "status"
    ] == "interrupted"


def parse_sse(body: str) -> list[tuple[str, Any]]:
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_runs_wait_and_stream_in_process_under_the_blocking_detector(
    api: tuple[httpx.AsyncClient, Services], local_model: LocalModel
) -> None:
    """The whole request path (routes, registry, store, graph, SSE encoding) on the loop
    of this test, which fails on any blocking call."""
    client, _services = api
    tid = (await client.post("/threads", json={"metadata": {"owner": "test"}})).json()["thread_id"]
    body = {"assistant_id": "agent", "context": context_for(local_model)}
    waited = await client.post(f"/threads/{tid}/runs/wait", json={**body, "input": user("one")})
    assert waited.status_code == 200, waited.text
    assert waited.json()["messages"][-1]["content"].startswith('You said: "one"')
    streamed = await client.post(
        f"/threads/{tid}/runs/stream",
        json={
            **body,
            "input": user("two"),
            "stream_mode": ["values", "updates", "messages-tuple"],
        },
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(streamed.text)
    names = [name for name, _ in events]
    assert names[0] == "metadata" and {"values", "updates", "messages"} <= set(names), names
    assert names[-1] == "end", "a finished stream ends with `end`, which the SDK watches for"
    chunk, metadata = next(data for name, data in events if name == "messages")
    assert chunk["type"] == "AIMessageChunk" and metadata["langgraph_node"] == "call_model"
    final = [data for name, data in events if name == "values"][-1]
    assert 'Earlier you said: "one"' in final["messages"][-1]["content"]
    thread = (await client.get(f"/threads/{tid}")).json()
    assert thread["status"] == "idle" and thread["metadata"] == {"owner": "test"}
    runs = (await client.get(f"/threads/{tid}/runs")).json()
    assert [r["status"] for r in runs] == ["success", "success"]
    history = (await client.post(f"/threads/{tid}/history", json={"limit": 3})).json()
    assert len(history) == 3 and history[0]["checkpoint"]["thread_id"] == tid


async def test_draining_server_answers_503_with_retry_after(
    api: tuple[httpx.AsyncClient, Services],
) -> None:
    client, services = api
    assert (await client.get("/ready")).json()["database"] == "ok"
    tid = (await client.post("/threads", json={})).json()["thread_id"]
    services.registry.begin_drain()
    response = await client.post(
        f"/threads/{tid}/runs", json={"assistant_id": "agent", "input": user("hi")}
    )
    assert_error(response, 503, "shutting down")
    assert response.headers["retry-after"].isdigit()
    stateless = await client.post("/runs/wait", json={"assistant_id": "agent", "input": user("x")})
    assert_error(stateless, 503)
    ready = await client.get("/ready")
    assert ready.status_code == 503 and "retry-after" in ready.headers
    # Reads keep working while draining.
    assert (await client.get(f"/threads/{tid}")).status_code == 200


async def test_bearer_token_auth(
    api: tuple[httpx.AsyncClient, Services],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "s3cret-" + uuid.uuid4().hex
    monkeypatch.setenv("AGENT_API_TOKEN", token)
    _client, services = api
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        assert (await client.get("/ok")).status_code == 200
        assert_error(await client.post("/threads", json={}), 401, "token")
        wrong = await client.post("/threads", json={}, headers={"authorization": "Bearer nope"})
        assert_error(wrong, 401)
        bearer = await client.post(
            "/threads", json={}, headers={"authorization": f"Bearer {token}"}
        )
        assert bearer.status_code == 200
        api_key = await client.post("/threads", json={}, headers={"x-api-key": token})
        assert api_key.status_code == 200
    assert token not in caplog.text


# -- real server processes ---------------------------------------------------------------------


@pytest.fixture
def server(fresh_database_url: str, local_model: LocalModel) -> Iterator[AgentServer]:
    srv = start_server(fresh_database_url, model_env(local_model))
    try:
        yield srv
    finally:
        srv.stop()


async def test_sdk_scenario_against_self_hosted_server(
    server: AgentServer, local_model: LocalModel
) -> None:
    client = get_client(url=server.url, api_key=None)
    report = await run_scenario(client, local_model)
    assert report.max_model_requests_in_flight >= 10
    # Stateless runs, and the run bookkeeping the scenario does not cover.
    stateless = await client.runs.wait(None, "agent", input=user("no thread"))
    assert stateless["messages"][-1]["content"].startswith('You said: "no thread"')
    events = [
        part.event
        async for part in client.runs.stream(None, "agent", input=user("hi"), stream_mode="values")
    ]
    assert events[0] == "metadata" and "values" in events
    thread = await client.threads.create()
    run = await client.runs.create(thread["thread_id"], "agent", input=user("joined"))
    joined = await client.runs.join(thread["thread_id"], run["run_id"])
    assert joined["messages"][-1]["content"].startswith('You said: "joined"')
    runs = await client.runs.list(thread["thread_id"])
    assert [r["status"] for r in runs] == ["success"]
    fetched = await client.threads.get(thread["thread_id"])
    assert fetched["status"] == "idle" and fetched["values"]["messages"]
    assert (await client.assistants.get("agent"))["graph_id"] == "agent"


def _clean(log: str) -> list[str]:
    return [marker for marker in DIRTY_SHUTDOWN_MARKERS if marker in log]


async def test_sigterm_drains_in_flight_runs_then_restart_reads_them(
    fresh_database_url: str, slow_local_model: LocalModel
) -> None:
    timeout = 6.0
    env = model_env(slow_local_model, SHUTDOWN_TIMEOUT=str(timeout))
    srv = await asyncio.to_thread(start_server, fresh_database_url, env)
    try:
        client = get_client(url=srv.url, api_key=None)
        threads = [await client.threads.create() for _ in range(20)]
        # Half answer in ~1.5 s (inside the grace window), half would take 30 s.
        runs = []
        for i, thread in enumerate(threads):
            text = f"quick {i}" if i % 2 == 0 else f"slow {i} [[latency=30]]"
            runs.append(await client.runs.create(thread["thread_id"], "agent", input=user(text)))
        # Open requests held by runs must not hold up the shutdown either.
        streamed: list[str] = []

        async def consume_stream() -> None:
            thread = await client.threads.create()
            async for part in client.runs.stream(
                thread["thread_id"], "agent", input=user("streamed [[latency=30]]")
            ):
                streamed.append(part.event)

        waited = await client.threads.create()
        open_requests = [
            asyncio.create_task(consume_stream()),
            asyncio.create_task(
                client.runs.wait(waited["thread_id"], "agent", input=user("waited [[latency=30]]"))
            ),
        ]
        async with asyncio.timeout(20):
            for thread, run in zip(threads, runs, strict=True):
                while (await client.runs.get(thread["thread_id"], run["run_id"]))[
                    "status"
                ] != "running":
                    await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        # The second SIGTERM must not cut the drain short.
        elapsed = await asyncio.to_thread(srv.terminate, again_after=0.5)
    finally:
        await asyncio.to_thread(srv.stop)
    log = await asyncio.to_thread(srv.log)
    stream_result, wait_result = await asyncio.gather(*open_requests, return_exceptions=True)
    assert stream_result is None and streamed[0] == "metadata" and streamed[-1] == "error", (
        stream_result,
        streamed,
    )
    assert "UserInterrupt" in str(wait_result), wait_result
    assert elapsed <= timeout + 1, f"SIGTERM to exit took {elapsed:.2f}s\n{log}"
    assert srv.proc.returncode == 0, log
    assert _clean(log) == [], log
    assert "did not stop by the deadline" not in log, log
    assert "shutdown already in progress" in log, log

    restarted = await asyncio.to_thread(start_server, fresh_database_url, env)
    try:
        client = get_client(url=restarted.url, api_key=None)
        for i, (thread, run) in enumerate(zip(threads, runs, strict=True)):
            tid = thread["thread_id"]
            status = (await client.runs.get(tid, run["run_id"]))["status"]
            state = await client.threads.get_state(tid)
            messages = state["values"]["messages"]
            assert state["checkpoint"]["checkpoint_id"], state
            if i % 2 == 0:
                assert status == "success", (i, status)
                assert messages[-1]["type"] == "ai", messages
            else:
                assert status == "interrupted", (i, status)
                # The cancelled run's last checkpoint holds its input.
                assert messages[0]["content"].startswith(f"slow {i}"), messages
            assert (await client.runs.list(tid))[0]["status"] == status
    finally:
        await asyncio.to_thread(restarted.stop)
    print(f"SIGTERM with 20 runs in flight: exited after {elapsed:.2f}s (deadline {timeout}s)")


async def test_kill_9_keeps_the_last_checkpoint_and_the_thread_continues(
    fresh_database_url: str, local_model: LocalModel
) -> None:
    env = model_env(local_model)
    srv = await asyncio.to_thread(start_server, fresh_database_url, env)
    try:
        client = get_client(url=srv.url, api_key=None)
        thread = await client.threads.create()
        tid = thread["thread_id"]
        await client.runs.wait(tid, "agent", input=user("first words"))
        run = await client.runs.create(tid, "agent", input=user("take your time [[latency=30]]"))
        async with asyncio.timeout(10):
            while (await client.runs.get(tid, run["run_id"]))["status"] != "running":
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the input checkpoint is written before the model call
        await asyncio.to_thread(srv.kill)
    finally:
        await asyncio.to_thread(srv.stop)

    restarted = await asyncio.to_thread(start_server, fresh_database_url, env)
    try:
        client = get_client(url=restarted.url, api_key=None)
        state = await client.threads.get_state(tid)
        texts = [m["content"] for m in state["values"]["messages"]]
        assert texts[0] == "first words" and texts[1].startswith('You said: "first words"')
        assert texts[-1] == "take your time [[latency=30]]", texts
        crashed = await client.runs.get(tid, run["run_id"])
        assert crashed["status"] == "interrupted", crashed
        result = await client.runs.wait(tid, "agent", input=user("and now?"))
        reply = result["messages"][-1]["content"]
        assert 'Earlier you said: "take your time"' in reply, reply
    finally:
        await asyncio.to_thread(restarted.stop)


def test_unreachable_database_exits_with_one_clear_line() -> None:
    port = free_port()  # nothing listens here once closed
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://agent:hunter2@127.0.0.1:{port}/agent",
        "PG_POOL_OPEN_TIMEOUT": "1",
        "PYTHONPATH": "src",
    }
    result = subprocess.run(
        [sys.executable, "-m", "agent", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0
    assert "Traceback" not in output and "hunter2" not in output, output
    lines = output.splitlines()
    assert len(lines) == 1 and "cannot start" in lines[0] and f":{port}/agent" in lines[0], output


def test_process_exit_is_bounded_when_a_task_ignores_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After the drain abandons a run, ``asyncio.run`` would wait for it forever."""

    async def stubborn() -> None:
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)

    async def serve_then_return() -> None:
        task = asyncio.create_task(stubborn(), name="run stubborn")
        # Abandoned on purpose; spare the test output asyncio's "destroyed" notice.
        task._log_destroy_pending = False  # type: ignore[attr-defined]
        await asyncio.sleep(0)

    started = time.monotonic()
    run_bounded(serve_then_return(), leftovers_timeout=0.5)
    assert time.monotonic() - started < 2
    assert "1 task(s) that ignore cancellation: run stubborn" in caplog.text
