"""Launch the servers under test: ``langgraph dev`` and the self-hosted server.

Each launcher yields a :class:`Server` once ``GET /ok`` answers 200, with the
time that took (cold start), and stops the process group afterwards.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import (
    OFFLINE_ENV,
    free_port,
    stop_process_group,
    wait_until_ok,
)

from bench.procs import PROJECT_DIR, PYTHON, child_env

LANGGRAPH = Path(PYTHON).parent / "langgraph"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    cold_start_s: float

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def serving_pid(self) -> int:
        """The process that runs the graphs: the deepest python in the group."""
        from bench.procs import process_tree

        pids = process_tree(self.process.pid)
        return pids[-1] if len(pids) > 1 else self.process.pid


@contextlib.contextmanager
def _launch(
    command: list[str], env: Mapping[str, str], url: str, startup_timeout: float
) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        log_path = Path(tmp) / "server.log"
        started = time.perf_counter()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=PROJECT_DIR,
                env=child_env({**OFFLINE_ENV, **env}),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until_ok(url, process, log_path, startup_timeout)
            yield Server(url, process, log_path, time.perf_counter() - started)
        finally:
            stop_process_group(process)


@contextlib.contextmanager
def langgraph_dev(
    env: Mapping[str, str],
    *,
    config: str = "bench/langgraph.bench.json",
    jobs_per_worker: int = 250,
    allow_blocking: bool = False,
    startup_timeout: float = 120,
) -> Iterator[Server]:
    """``langgraph dev`` with the lag probe mounted (``GET /bench/lag``)."""
    port = free_port()
    command = [
        str(LANGGRAPH),
        "dev",
        "--no-browser",
        "--no-reload",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--config={config}",
        f"--n-jobs-per-worker={jobs_per_worker}",
        *(["--allow-blocking"] if allow_blocking else []),
    ]
    with _launch(command, env, f"http://127.0.0.1:{port}", startup_timeout) as server:
        yield server


def hosted_server_available() -> bool:
    return (PROJECT_DIR / "src/agent/server.py").exists() and (
        PROJECT_DIR / "src/agent/__main__.py"
    ).exists()


@contextlib.contextmanager
def hosted_server(
    env: Mapping[str, str], *, lag_probe: bool = False, startup_timeout: float = 60
) -> Iterator[Server]:
    """``python -m agent serve`` (needs DATABASE_URL etc. in ``env``).

    ``lag_probe`` runs it through ``bench.hosted_probe``, which adds ``GET /bench/lag``.
    """
    port = free_port()
    module = "bench.hosted_probe" if lag_probe else "agent"
    command = [PYTHON, "-m", module, "serve", "--host", "127.0.0.1", "--port", str(port)]
    with _launch(command, env, f"http://127.0.0.1:{port}", startup_timeout) as server:
        yield server
