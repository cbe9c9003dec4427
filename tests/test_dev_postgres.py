"""``langgraph dev --config langgraph.postgres.json`` end to end, on a real PostgreSQL.

The server runs WITHOUT ``--allow-blocking``, so langgraph's own detector
watches every run; the agent talks to the local OpenAI-compatible model.
Each test gets its own empty database, so checkpoint counts are exact.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from langgraph.store.memory import InMemoryStore
from langgraph_sdk import get_client
from langgraph_sdk.runtime import _ExecutionRuntime, _ReadRuntime
from psycopg import AsyncConnection

from agent import inflight
from agent.checkpointer import PostgresSettings, open_pool, open_saver, postgres_checkpointer
from agent.graph import build_graph, graph
from agent.graph_factory import make_graph
from agent.webapp import app as webapp
from tests.support.devserver import launch_langgraph_dev, run_langgraph_dev
from tests.support.localmodel import LocalModel
from tests.support.processes import free_port

pytestmark = pytest.mark.e2e

SHUTDOWN_GRACE = 15.0
# langgraph_runtime_inmem cancels runs as soon as its queue stops, then waits
# this long for them to unwind.
INMEM_GRACE = 5.0
# The slow run's model reply arrives this long after the request.
SLOW_REPLY = 8.0
# Lines that mean a write reached a closed pool or a run blocked the loop.
FORBIDDEN = ("BlockingError", "PoolClosed", "connection is closed", "the pool is closed")


@dataclass
class DevServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    database_url: str
    started_in: float

    def read_log(self) -> str:
        return self.log.read_text(errors="replace")


def _server_env(database_url: str, model: LocalModel, **extra: str) -> dict[str, str]:
    return {
        # No periodic flush of the in-memory queue; each server also gets a
        # private working directory (see tests.support.devserver.private_workdir).
        "LANGGRAPH_DISABLE_FILE_PERSISTENCE": "true",
        "DATABASE_URL": database_url,
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "local",
        "AGENT_MODEL": "local-model",
        "SHUTDOWN_GRACE": str(SHUTDOWN_GRACE),
        **extra,
    }


@pytest.fixture
def dev_server(fresh_database_url: str, local_model: LocalModel) -> Iterator[DevServer]:
    with run_langgraph_dev(
        _server_env(fresh_database_url, local_model),
        config="langgraph.postgres.json",
        jobs_per_worker=4,
        stop_timeout_s=SHUTDOWN_GRACE + INMEM_GRACE + 10,
    ) as server:
        yield DevServer(
            url=server.url,
            process=server.process,
            log=server.log_path,
            database_url=fresh_database_url,
            started_in=server.started_in_s or 0.0,
        )


async def _checkpoint_rows(database_url: str, thread_id: str) -> int:
    async with await AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM checkpoints WHERE thread_id = %s", (thread_id,)
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def _terminate_and_wait(server: DevServer, limit: float) -> tuple[int, float]:
    """SIGTERM the server; return its exit code and seconds until it exited."""
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(server.process.wait, limit)
    return code, time.monotonic() - started


# uvicorn re-raises the signal it caught after a graceful shutdown.
CLEAN_EXIT = (0, -signal.SIGTERM)


def _assert_clean(log: str) -> None:
    for needle in FORBIDDEN:
        assert needle not in log, f"server log contains {needle!r}:\n{log[-4000:]}"


async def test_runs_persist_to_postgres_without_blocking(dev_server: DevServer) -> None:
    client = get_client(url=dev_server.url)
    thread = await client.threads.create()
    result = await client.runs.wait(
        thread["thread_id"],
        "agent",
        input={"messages": [{"role": "user", "content": "hello from the dev server"}]},
    )
    assert isinstance(result, dict), result
    assert "__error__" not in result, result
    last = result["messages"][-1]
    assert last["type"] == "ai"
    assert "hello from the dev server" in last["content"]

    rows = await _checkpoint_rows(dev_server.database_url, thread["thread_id"])
    assert rows >= 3, f"expected the run's checkpoints in Postgres, found {rows}"
    state = await client.threads.get_state(thread["thread_id"])
    assert state["values"]["messages"][-1]["content"] == last["content"]

    async with httpx.AsyncClient(base_url=dev_server.url, trust_env=False) as http:
        ready = await http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok"

    # Schema reads call the graph factory too; they must not count as runs,
    # so with nothing running the server stops without waiting.
    assistants = await client.assistants.search(graph_id="agent")
    await client.assistants.get_schemas(assistants[0]["assistant_id"])
    code, took = await _terminate_and_wait(dev_server, limit=30)
    log = await asyncio.to_thread(dev_server.read_log)
    assert code in CLEAN_EXIT, log[-4000:]
    assert "shutdown: waiting" not in log
    assert took < INMEM_GRACE, f"idle shutdown took {took:.1f}s"
    assert "closed PostgreSQL pool" in log
    _assert_clean(log)
    print(f"dev server ready in {dev_server.started_in:.1f}s; idle shutdown {took:.2f}s")


async def test_sigterm_drains_slow_run_before_pool_closes(dev_server: DevServer) -> None:
    # Without the app's drain the server would cancel this run at once; with
    # it, shutdown waits for the slow model reply and the final checkpoint.
    client = get_client(url=dev_server.url)
    thread = await client.threads.create()
    run = await client.runs.create(
        thread["thread_id"],
        "agent",
        input={
            "messages": [{"role": "user", "content": f"[[latency={SLOW_REPLY:g}]] slow goodbye"}]
        },
    )
    async with asyncio.timeout(30):
        while True:
            status = (await client.runs.get(thread["thread_id"], run["run_id"]))["status"]
            if status == "running":
                break
            assert status == "pending", status
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # let the model request go out

    code, took = await _terminate_and_wait(dev_server, limit=SHUTDOWN_GRACE + INMEM_GRACE + 10)
    log = await asyncio.to_thread(dev_server.read_log)
    assert code in CLEAN_EXIT, log[-4000:]
    assert "shutdown: runs finished" in log, log[-4000:]
    assert SLOW_REPLY / 2 < took < SHUTDOWN_GRACE, f"shutdown took {took:.1f}s"
    _assert_clean(log)

    # The run's final state reached Postgres before the pool closed.
    settings = PostgresSettings(url=dev_server.database_url)
    async with open_pool(settings) as pool:
        graph = build_graph(await open_saver(pool, setup=False))
        state = await graph.aget_state({"configurable": {"thread_id": thread["thread_id"]}})
    messages = state.values["messages"]
    assert messages[-1].type == "ai", messages
    assert "slow goodbye" in messages[-1].content
    assert not state.next, f"run did not finish: next={state.next}"
    print(f"slow run drained; SIGTERM to exit {took:.2f}s")


def test_unreachable_database_fails_startup_with_one_line(local_model: LocalModel) -> None:
    closed = free_port()  # nothing listens there
    env = _server_env(
        f"postgresql://agent:hunter2-secret@127.0.0.1:{closed}/agent",
        local_model,
        PG_POOL_OPEN_TIMEOUT="1",
    )
    started = time.monotonic()
    with launch_langgraph_dev(env, config="langgraph.postgres.json", jobs_per_worker=4) as server:
        code = server.process.wait(timeout=60)
        output = server.log()
    assert code != 0, output[-4000:]
    assert time.monotonic() - started < 60
    lines = [line for line in output.splitlines() if "DatabaseUnavailable:" in line]
    assert lines, output[-4000:]
    assert f"database agent@127.0.0.1:{closed}/agent unavailable" in lines[-1]
    assert "hunter2-secret" not in output


# --- the HTTP app in process -----------------------------------------------


async def test_ready_checks_the_checkpointers_pool(fresh_database_url: str) -> None:
    transport = httpx.ASGITransport(app=webapp)
    async with (
        webapp.router.lifespan_context(webapp),
        httpx.AsyncClient(transport=transport, base_url="http://app") as http,
    ):
        unconfigured = await http.get("/ready")
        assert unconfigured.json()["database"] == "not configured"
        async with postgres_checkpointer(PostgresSettings(url=fresh_database_url)) as saver:
            ok = await http.get("/ready")
            assert ok.status_code == 200, ok.text
            assert ok.json()["database"] == "ok"
            await saver.conn.close()
            down = await http.get("/ready")
            assert down.status_code == 503
            assert "postgres" not in down.text.lower()


async def test_lifespan_waits_for_tracked_runs() -> None:
    finished = asyncio.Event()

    async def run() -> None:
        async with inflight.track("run-under-test"):
            await asyncio.sleep(0.6)
            finished.set()

    task = asyncio.create_task(run())
    async with webapp.router.lifespan_context(webapp):
        await asyncio.sleep(0.05)
        assert inflight.active() == ["run-under-test"]
        started = time.monotonic()
    took = time.monotonic() - started
    assert finished.is_set(), "lifespan returned while the run was still going"
    assert 0.4 < took < 2, took
    await task
    assert inflight.active() == []
    assert await inflight.wait_idle(0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=webapp), base_url="http://app"
    ) as http:
        draining = await http.get("/ready")
    assert draining.status_code == 503
    assert draining.json()["status"] == "draining"


async def test_graph_factory_tracks_runs_but_not_schema_reads() -> None:
    store = InMemoryStore()
    config = {"configurable": {"run_id": "run-42"}}
    read = _ReadRuntime(access_context="assistants.read", store=store)
    async with make_graph(config, read) as served:
        assert served is graph
        assert inflight.active() == []
    execution = _ExecutionRuntime(access_context="threads.create_run", store=store)
    async with make_graph(config, execution) as served:
        assert served is graph
        assert inflight.active() == ["run-42"]
    assert inflight.active() == []
