"""Checkpoint throughput per saver, with PostgreSQL near and 2 ms away.

Savers: ``InMemorySaver``, the stock ``AsyncPostgresSaver`` on a pool, and the
template's ``PooledPostgresSaver``. Two measurements per saver, concurrency 1
and 50, each in its own worker process on a fresh database:

- ``runs``: whole agent runs per second with a zero-latency model;
- ``saver``: the saver alone, ``aput`` + ``aput_writes`` pairs per second,
  which isolates the saver's own serialization from the agent's CPU cost.

PostgreSQL is reached directly and through ``bench.proxy`` (1 ms each way).
The proxy's real round trip is measured with ``SELECT 1`` and reported.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import psycopg
from tests.support.postgres import fresh_database

from bench.procs import delay_proxy, run_worker

SAVERS = ("memory", "stock", "pooled")


def pooled_saver_available() -> bool:
    return importlib.util.find_spec("agent.pooled_saver") is not None


def _via_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}").geturl()


def measured_rtt_ms(url: str, queries: int = 200) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        samples = []
        for _ in range(queries):
            started = time.perf_counter()
            conn.execute("SELECT 1")
            samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1000, 2)


def measure(
    server_url: str,
    env: Mapping[str, str],
    page_url: str,
    *,
    concurrencies: tuple[int, ...],
    runs: Mapping[int, int],
    saver_ops: Mapping[int, int],
    rtt_ms: tuple[float, ...] = (0.0, 2.0),
) -> dict[str, Any]:
    cells: list[dict[str, Any]] = []
    missing: list[str] = []
    savers = [s for s in SAVERS if s != "pooled" or pooled_saver_available()]
    if "pooled" not in savers:
        missing.append("PooledPostgresSaver (src/agent/pooled_saver.py) not found")
    measured: dict[str, float] = {}
    for rtt in rtt_ms:
        for saver in savers:
            if saver == "memory" and rtt:
                continue  # no database round trips to delay
            kinds = (
                (("runs", runs), ("saver", saver_ops)) if saver != "memory" else (("runs", runs),)
            )
            for kind, counts in kinds:
                for concurrency in concurrencies:
                    cell = _cell(server_url, env, page_url, kind, saver, concurrency, counts, rtt)
                    measured[str(rtt)] = cell.pop("measured_rtt_ms", measured.get(str(rtt), 0.0))
                    cells.append(cell)
                    print(f"  checkpoint {cell}", flush=True)
    return {"cells": cells, "missing": missing, "measured_rtt_ms": measured}


def _cell(
    server_url: str,
    env: Mapping[str, str],
    page_url: str,
    kind: str,
    saver: str,
    concurrency: int,
    counts: Mapping[int, int],
    rtt: float,
) -> dict[str, Any]:
    command = "checkpoint" if kind == "runs" else "saverops"
    args = [command, f"--saver={saver}", f"--concurrency={concurrency}"]
    args += [f"--runs={counts[concurrency]}", f"--page-url={page_url}"]
    with fresh_database(server_url) as db:
        if saver == "memory":
            result = run_worker("bench.inprocess", args, env, timeout=900)
            result["measured_rtt_ms"] = 0.0
        else:
            port = urlsplit(db).port or 5432
            with delay_proxy("127.0.0.1", port, rtt / 2) as proxy_port:
                target = _via_port(db, proxy_port) if rtt else db
                rtt_now = measured_rtt_ms(target)
                result = run_worker("bench.inprocess", [*args, f"--db={target}"], env, 900)
                result["measured_rtt_ms"] = rtt_now
    return {"kind": kind, "rtt_ms": rtt, **result}


def speedup(cells: list[Mapping[str, Any]], kind: str, concurrency: int, rtt: float) -> Any:
    """Pooled over stock at one setting, or None when either is missing."""
    key = "runs_per_s" if kind == "runs" else "checkpoints_per_s"
    found = {
        c["saver"]: c[key]
        for c in cells
        if c["kind"] == kind and c["concurrency"] == concurrency and c["rtt_ms"] == rtt
    }
    if found.get("stock") and found.get("pooled"):
        return round(found["pooled"] / found["stock"], 2)
    return None
