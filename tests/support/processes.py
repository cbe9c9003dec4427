"""Helpers for the server processes that tests and benchmarks start and stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

# langgraph dev and langsmith must never phone home in tests, CI or benchmarks.
OFFLINE_ENV = {
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _log_tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-5000:]


def wait_until_ok(
    url: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float
) -> None:
    """Poll ``GET {url}/ok`` until it answers 200; fail with the log if the process
    exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {process.returncode}:\n{_log_tail(log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/ok").status_code == 200:
                    return
            time.sleep(0.05)
    raise TimeoutError(f"no 200 from {url}/ok within {timeout_s}s:\n{_log_tail(log_path)}")


def stop_process_group(process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """SIGTERM the process group (started with ``start_new_session=True``), then
    SIGKILL it if it has not exited within ``timeout_s``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
