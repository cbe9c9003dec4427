"""End-to-end: the real ``langgraph dev`` server, WITHOUT --allow-blocking.

Its own blockbuster detector fails any run that blocks the loop; we drive it with
the official SDK and then check its log for BlockingError. ``--n-jobs-per-worker``
is above the concurrent run count so the runs really share the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from langgraph_sdk import get_client

from tests.scenario import CONCURRENT_RUNS, run_scenario
from tests.support.devserver import DevServer, run_langgraph_dev
from tests.support.localmodel import LocalModel

pytestmark = pytest.mark.e2e


def _agent_env(model: LocalModel) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "",
        "AGENT_MODEL": "local-model",
    }


@pytest.fixture(scope="module", params=["shared-loop", "isolated-loops"])
def dev_server(request: pytest.FixtureRequest, local_model: LocalModel) -> Iterator[DevServer]:
    env = _agent_env(local_model)
    env["BG_JOB_ISOLATED_LOOPS"] = "true" if request.param == "isolated-loops" else "false"
    with run_langgraph_dev(env, jobs_per_worker=CONCURRENT_RUNS + 5) as server:
        yield server
        log = server.log()
        assert "BlockingError" not in log, log[-5000:]
        assert "Blocking call" not in log, log[-5000:]


async def test_sdk_scenario(dev_server: DevServer, local_model: LocalModel) -> None:
    await local_model.areset()
    report = await run_scenario(get_client(url=dev_server.url), local_model)
    assert report.max_model_requests_in_flight >= CONCURRENT_RUNS // 2


@pytest.fixture(scope="module")
def blocking_dev_server() -> Iterator[DevServer]:
    with run_langgraph_dev({}, config="tests/controls/langgraph.json", jobs_per_worker=1) as server:
        yield server


async def test_control_dev_server_rejects_a_blocking_node(blocking_dev_server: DevServer) -> None:
    """The same harness, pointed at a graph that calls time.sleep, must see BlockingError."""
    client = get_client(url=blocking_dev_server.url)
    thread = await client.threads.create()
    # The SDK raises the run's error: {"__error__": {"error": "BlockingError", ...}}.
    with pytest.raises(Exception, match="BlockingError"):
        await client.runs.wait(thread["thread_id"], "blocking", input={"n": 0})
    log = await asyncio.to_thread(blocking_dev_server.log)
    assert "Blocking call to time.sleep" in log
