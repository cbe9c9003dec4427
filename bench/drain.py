"""Drain: SIGTERM the self-hosted server with N runs in flight; time it and audit it.

For each N: a fresh database and server, N background runs started through
the SDK (each model call takes 2 s, so a run takes about 4.5 s), SIGTERM once
the number of open model calls peaks, then:

- seconds from SIGTERM to exit, against ``SHUTDOWN_TIMEOUT``;
- per thread, from PostgreSQL: did a checkpoint get written, and is the latest
  one a finished run (last message is the model's final answer)?
- the server log grepped for ``Traceback``, ``ERROR``, ``PoolClosed``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.checkpoint.postgres import PostgresSaver
from tests.support.postgres import fresh_database

from bench.procs import run_worker
from bench.servers import hosted_server
from bench.workload import EXPECTED_ANSWER

ERROR_PATTERN = re.compile(r"Traceback|ERROR|PoolClosed")
RUN_LATENCY_S = 2.0
SUMMARY = re.compile(r"drain finished.*")


def audit_threads(db: str, threads: list[str]) -> dict[str, int]:
    written = finished = 0
    with PostgresSaver.from_conn_string(db) as saver:
        for thread_id in threads:
            found = saver.get_tuple({"configurable": {"thread_id": thread_id}})
            if found is None:
                continue
            written += 1
            messages = found.checkpoint["channel_values"].get("messages", [])
            last = messages[-1] if messages else None
            if isinstance(last, AIMessage) and EXPECTED_ANSWER in str(last.content):
                finished += 1
    return {"threads": len(threads), "with_checkpoint": written, "finished": finished}


def error_lines(log: str) -> list[str]:
    return [line[:300] for line in log.splitlines() if ERROR_PATTERN.search(line)]


def one(
    pg_url: str, env: Mapping[str, str], page_url: str, model_url: str, n: int, deadline_s: float
) -> dict[str, Any]:
    with fresh_database(pg_url) as db:
        server_env = {**env, "DATABASE_URL": db, "SHUTDOWN_TIMEOUT": f"{deadline_s:g}"}
        with hosted_server(server_env) as server:
            warm = ["start", f"--url={server.url}", f"--page-url={page_url}"]
            warm += ["--n=1", "--latency=0", f"--model-url={model_url}"]
            run_worker("bench.client", warm, env, 120)
            time.sleep(1)
            args = ["start", f"--url={server.url}", f"--page-url={page_url}"]
            args += [f"--n={n}", f"--latency={RUN_LATENCY_S}", f"--model-url={model_url}"]
            started = run_worker("bench.client", args, env, 300)
            sent = time.perf_counter()
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(deadline_s + 60)
                exit_s = time.perf_counter() - sent
            except subprocess.TimeoutExpired:
                exit_s = float("inf")
            log = server.log()
        audit = audit_threads(db, started["threads"])
    errors = error_lines(log)
    summaries = SUMMARY.findall(log)
    result = {
        "n": n,
        "cold_start_s": round(server.cold_start_s, 2),
        "in_flight_at_sigterm": started["in_flight"],
        "deadline_s": deadline_s,
        "exit_s": round(exit_s, 2),
        "exit_code": server.process.returncode,
        "within_deadline_plus_1s": exit_s <= deadline_s + 1,
        **audit,
        "server_summary": summaries[-1] if summaries else "",
        "error_lines": len(errors),
        "first_errors": errors[:5],
    }
    print(f"  drain N={n}: {result}", flush=True)
    return result


def measure(
    pg_url: str,
    env: Mapping[str, str],
    page_url: str,
    model_url: str,
    ns: tuple[int, ...],
    deadline_s: float,
) -> dict[str, Any]:
    rows = [one(pg_url, env, page_url, model_url, n, deadline_s) for n in ns]
    return {"deadline_s": deadline_s, "run_latency_s": RUN_LATENCY_S, "rows": rows}
