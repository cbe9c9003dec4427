"""Pytest plugin and reusable launcher for the offline model server (``python -m localmodel``).

Outside pytest (benchmarks)::

    with run_local_model(latency=0.25, token_rate=50) as lm:
        llm = ChatOpenAI(base_url=lm.base_url, api_key="local", model=lm.model)

Inside async tests use the ``a``-prefixed helpers: the sync ones block the loop.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import free_port

__all__ = ["LocalModel", "local_model", "run_local_model", "slow_local_model"]

MODEL = "local-model"
API_KEY = "local"
_SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass(frozen=True)
class LocalModel:
    """A running server; ``base_url`` is what OpenAI clients take."""

    port: int
    host: str = "127.0.0.1"
    model: str = MODEL
    api_key: str = API_KEY
    log_path: Path | None = None  # the server's combined stdout/stderr

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # Plain http to localhost: skip TLS setup and proxy env lookups entirely.
    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, trust_env=False, verify=False)

    def _aclient(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10, trust_env=False, verify=False)

    def inject_faults(self, faults: Sequence[Mapping[str, Any]]) -> None:
        """Queue faults; each is consumed by one later chat completions request, FIFO."""
        with self._client() as client:
            client.post("/control/faults", json={"faults": list(faults)}).raise_for_status()

    def reset(self) -> None:
        with self._client() as client:
            client.post("/control/reset").raise_for_status()

    def stats(self) -> dict[str, int]:
        with self._client() as client:
            response = client.get("/control/stats")
            response.raise_for_status()
            result: dict[str, int] = response.json()
            return result

    async def ainject_faults(self, faults: Sequence[Mapping[str, Any]]) -> None:
        async with self._aclient() as client:
            response = await client.post("/control/faults", json={"faults": list(faults)})
            response.raise_for_status()

    async def areset(self) -> None:
        async with self._aclient() as client:
            (await client.post("/control/reset")).raise_for_status()

    async def astats(self) -> dict[str, int]:
        async with self._aclient() as client:
            response = await client.get("/control/stats")
            response.raise_for_status()
            result: dict[str, int] = response.json()
            return result


def _wait_healthy(proc: subprocess.Popen[bytes], lm: LocalModel, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1, trust_env=False) as client:
        while True:
            if proc.poll() is not None:
                output = log.read_text(errors="replace")
                raise RuntimeError(f"localmodel exited with {proc.returncode}:\n{output}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                health = client.get(f"{lm.url}/health")
                if health.status_code == 200 and health.json().get("pid") == proc.pid:
                    return
            if time.monotonic() > deadline:
                output = log.read_text(errors="replace")
                raise TimeoutError(f"localmodel not healthy after {timeout}s:\n{output}")
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def run_local_model(
    latency: float = 0.0,
    token_rate: float = 0.0,
    port: int | None = None,
    host: str = "127.0.0.1",
    startup_timeout: float = 15.0,
) -> Iterator[LocalModel]:
    """Start ``python -m localmodel`` in a subprocess, yield once /health answers, stop it."""
    env = dict(os.environ)
    # Works even before the package is installed into the venv.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_SRC), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="localmodel-") as tmp:
        log = Path(tmp) / "server.log"
        # A free port can be taken between probing and binding; retry a fresh one then.
        attempts = 1 if port else 3
        for attempt in range(attempts):
            lm = LocalModel(port=port or free_port(host), host=host, log_path=log)
            command = [sys.executable, "-m", "localmodel", f"--host={host}", f"--port={lm.port}"]
            command += [f"--latency={latency}", f"--token-rate={token_rate}"]
            # A file, not a pipe: a full pipe would stall the server.
            with log.open("wb") as out:
                proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
            try:
                _wait_healthy(proc, lm, log, startup_timeout)
                break
            except RuntimeError as exc:
                _stop(proc)
                if attempt == attempts - 1 or "address already in use" not in str(exc).lower():
                    raise
            except BaseException:
                _stop(proc)
                raise
        try:
            yield lm
        finally:
            _stop(proc)


@pytest.fixture(scope="session")
def local_model() -> Iterator[LocalModel]:
    """Instant replies: no latency, no per-token delay."""
    with run_local_model(latency=0.0, token_rate=0.0) as lm:
        yield lm


@pytest.fixture(scope="session")
def slow_local_model() -> Iterator[LocalModel]:
    """Realistic pacing: 1 s to the first token, then 20 tokens/s."""
    with run_local_model(latency=1.0, token_rate=20.0) as lm:
        yield lm


@pytest.fixture(autouse=True)
def _reset_local_models(request: pytest.FixtureRequest) -> None:
    """Fresh fault queue and counters for tests that use a model server (one local POST)."""
    for name in ("local_model", "slow_local_model"):
        if name in request.fixturenames:
            lm: LocalModel = request.getfixturevalue(name)
            lm.reset()
