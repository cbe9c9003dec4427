"""Start the real ``langgraph dev`` server (without --allow-blocking) for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import OFFLINE_ENV, free_port, stop_process_group, wait_until_ok

PROJECT_DIR = Path(__file__).resolve().parents[2]
LANGGRAPH = Path(sys.executable).parent / "langgraph"


@dataclass
class DevServer:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    started_in_s: float | None = None
    """Seconds from launch until ``/ok`` answered (set by ``run_langgraph_dev``)."""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


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


@contextlib.contextmanager
def launch_langgraph_dev(
    env: Mapping[str, str],
    *,
    config: str = "langgraph.json",
    jobs_per_worker: int = 25,
    stop_timeout_s: float = 20,
) -> Iterator[DevServer]:
    """Start ``langgraph dev`` on a free port with the given extra environment, in a
    private working directory; stop its process group on exit. Does not wait."""
    port = free_port()
    config_path = PROJECT_DIR / config
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
                env={**os.environ, **OFFLINE_ENV, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            yield DevServer(f"http://127.0.0.1:{port}", log_path, process)
        finally:
            stop_process_group(process, stop_timeout_s)


@contextlib.contextmanager
def run_langgraph_dev(
    env: Mapping[str, str],
    *,
    config: str = "langgraph.json",
    jobs_per_worker: int = 25,
    startup_timeout_s: float = 90,
    stop_timeout_s: float = 20,
) -> Iterator[DevServer]:
    """``launch_langgraph_dev``, yielding once ``GET /ok`` answers."""
    started = time.monotonic()
    with launch_langgraph_dev(
        env, config=config, jobs_per_worker=jobs_per_worker, stop_timeout_s=stop_timeout_s
    ) as server:
        wait_until_ok(server.url, server.process, server.log_path, startup_timeout_s)
        server.started_in_s = time.monotonic() - started
        yield server
