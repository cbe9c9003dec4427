"""Launch ``python -m agent serve`` as a real process (sync: use from fixtures or threads).

``start_server(...)`` returns an :class:`AgentServer`; ``terminate()`` sends
SIGTERM and returns the seconds until the process exited. The log is a file,
not a pipe, so a chatty server can never stall on a full pipe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import free_port, wait_until_ok

__all__ = ["AgentServer", "running_server", "start_server"]

_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class AgentServer:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0, *, again_after: float | None = None) -> float:
        """SIGTERM (and optionally a second one, like an impatient operator);
        seconds until exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        if again_after is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=again_after)
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        return time.monotonic() - started

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(
    database_url: str,
    env: Mapping[str, str] | None = None,
    *,
    port: int | None = None,
    log_dir: Path | None = None,
    startup_timeout: float = 30.0,
) -> AgentServer:
    port = port or free_port()
    full_env = dict(os.environ)
    full_env.update(
        {
            "DATABASE_URL": database_url,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(_ROOT / "src"), full_env.get("PYTHONPATH")])
            ),
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.update(env or {})
    directory = log_dir or Path(tempfile.mkdtemp(prefix="agent-server-"))
    log_path = directory / f"server-{port}-{int(time.time() * 1000)}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=_ROOT,
        )
    server = AgentServer(proc, port, log_path, full_env)
    try:
        wait_until_ok(server.url, proc, log_path, startup_timeout)
    except TimeoutError:
        server.kill()
        raise
    return server


@contextlib.contextmanager
def running_server(
    database_url: str, env: Mapping[str, str] | None = None
) -> Iterator[AgentServer]:
    server = start_server(database_url, env)
    try:
        yield server
    finally:
        server.stop()
