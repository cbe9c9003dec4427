"""Start the real ``langgraph dev`` server (without --allow-blocking) for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

PROJECT_DIR = Path(__file__).resolve().parents[2]
LANGGRAPH = Path(os.sys.executable).parent / "langgraph"  # type: ignore[attr-defined]

# The dev server must never phone home in tests or CI.
OFFLINE_ENV = {
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
}


@dataclass
class DevServer:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def private_workdir(config_dir: Path, parent: Path) -> Path:
    """A directory that mirrors ``config_dir`` through symlinks, for one server only.

    ``langgraph dev`` keeps its in-memory queue in ``./.langgraph_api/`` and
    reloads it at start, even with file persistence off, so servers started in
    the same directory would resurrect each other's runs.
    """
    workdir = parent / "project"
    workdir.mkdir()
    for entry in config_dir.iterdir():
        if entry.name != ".langgraph_api":
            (workdir / entry.name).symlink_to(entry)
    return workdir


def _wait_ready(server: DevServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"langgraph dev exited early:\n{server.log()[-5000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{server.url}/ok").status_code == 200:
                    return
            time.sleep(0.2)
    raise TimeoutError(f"langgraph dev not ready after {timeout_s}s:\n{server.log()[-5000:]}")


@contextlib.contextmanager
def run_langgraph_dev(
    env: Mapping[str, str],
    *,
    config: str = "langgraph.json",
    jobs_per_worker: int = 25,
    startup_timeout_s: float = 90,
) -> Iterator[DevServer]:
    """Run ``langgraph dev`` on a free port with the given extra environment."""
    port = free_port()
    config_path = PROJECT_DIR / config
    full_env = {**os.environ, **OFFLINE_ENV, **env}
    command = [
        str(LANGGRAPH),
        "dev",
        "--no-browser",
        "--no-reload",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--config={config_path.name}",
        f"--n-jobs-per-worker={jobs_per_worker}",
    ]
    with tempfile.TemporaryDirectory(prefix="langgraph-dev-") as tmp:
        workdir = private_workdir(config_path.parent, Path(tmp))
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=workdir,  # graph paths resolve from here
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = DevServer(url=f"http://127.0.0.1:{port}", log_path=log_path, process=process)
        try:
            _wait_ready(server, startup_timeout_s)
            yield server
        finally:
            stop(server)


def stop(server: DevServer, timeout_s: float = 20) -> None:
    if server.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
