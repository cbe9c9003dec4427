"""Helper processes: the page server, the delay proxy, worker runs, /proc readings.

Everything measured runs in its own process; the orchestrator only starts,
waits and reads. Helpers print their port as their first stdout line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(PROJECT_DIR), str(PROJECT_DIR / "src"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(extra or {})
    return env


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def port_printing_process(module: str, *args: str) -> Iterator[int]:
    """Run ``python -m module args``; yield the port it prints first; stop it after."""
    proc = subprocess.Popen(
        [PYTHON, "-m", module, *args],
        stdout=subprocess.PIPE,
        env=child_env(),
        cwd=PROJECT_DIR,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError(f"{module} did not print a port (got {line!r})")
        yield int(line)
    finally:
        stop_process(proc)


@contextlib.contextmanager
def page_server() -> Iterator[str]:
    with port_printing_process("bench.pages") as port:
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def delay_proxy(target_host: str, target_port: int, delay_ms: float) -> Iterator[int]:
    with port_printing_process(
        "bench.proxy", f"--target={target_host}:{target_port}", f"--delay-ms={delay_ms}"
    ) as port:
        yield port


def run_worker(module: str, args: list[str], env: Mapping[str, str], timeout: float) -> Any:
    """Run a worker process to completion and parse the JSON it prints last."""
    result = subprocess.run(
        [PYTHON, "-m", module, *args],
        capture_output=True,
        text=True,
        env=child_env(env),
        cwd=PROJECT_DIR,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(
            f"{module} {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return json.loads(lines[-1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (not its children), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (langgraph dev runs its server in a child)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found
