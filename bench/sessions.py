"""Measurements against one running server process (``langgraph dev`` or self-hosted).

Every load generator is a ``bench.client`` process; this module only starts
them and collects their JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from bench.procs import run_worker
from bench.servers import Server


@dataclass(frozen=True)
class Plan:
    """What to measure and how hard; ``--quick`` shrinks it."""

    ns: tuple[int, ...]
    latencies: tuple[float, ...]
    blocking_max_wall_s: float
    ok_inflight: int = 20
    memory_n: int = 100
    cpu_runs: int = 200
    cpu_concurrency: int = 10


def has_lag_probe(url: str) -> bool:
    try:
        return httpx.get(f"{url}/bench/lag", timeout=5, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _client(args: list[str], env: Mapping[str, str], timeout: float = 1800) -> Any:
    return run_worker("bench.client", args, env, timeout)


def scaling(
    server: Server,
    env: Mapping[str, str],
    page_url: str,
    plan: Plan,
    *,
    latencies: tuple[float, ...],
    max_wall: float = 1e9,
) -> dict[str, Any]:
    lag = has_lag_probe(server.url)
    by_latency: dict[str, Any] = {}
    for latency in latencies:
        args = ["scaling", f"--url={server.url}", f"--page-url={page_url}"]
        args += [f"--ns={','.join(map(str, plan.ns))}", f"--latency={latency}"]
        args += [f"--max-wall={max_wall}", *(["--lag"] if lag else [])]
        by_latency[f"{latency:g}"] = _client(args, env)
        print(f"  scaling latency={latency:g}: {brief(by_latency[f'{latency:g}'])}", flush=True)
    return {"lag_probe": lag, "by_latency": by_latency}


def ok_under_load(
    server: Server, env: Mapping[str, str], page_url: str, plan: Plan
) -> dict[str, Any]:
    lag = has_lag_probe(server.url)
    args = ["ok", f"--url={server.url}", f"--page-url={page_url}"]
    args += [f"--inflight={plan.ok_inflight}", "--latency=1", *(["--lag"] if lag else [])]
    result: dict[str, Any] = _client(args, env)
    if not lag:
        result["lag"] = None
        result["lag_note"] = "not measured: no GET /bench/lag in this server"
    print(f"  /ok with {plan.ok_inflight} in flight: {result['ok']} lag={result['lag']}")
    return result


def memory(
    server: Server, env: Mapping[str, str], page_url: str, model_url: str, plan: Plan
) -> dict[str, Any]:
    args = ["memory", f"--url={server.url}", f"--page-url={page_url}"]
    args += [f"--n={plan.memory_n}", f"--pids={server.serving_pid()}", f"--model-url={model_url}"]
    result: dict[str, Any] = _client(args, env)
    print(f"  memory: {result}", flush=True)
    return result


def cpu(server: Server, env: Mapping[str, str], page_url: str, plan: Plan) -> dict[str, Any]:
    args = ["cpu", f"--url={server.url}", f"--page-url={page_url}", f"--runs={plan.cpu_runs}"]
    args += [f"--concurrency={plan.cpu_concurrency}", f"--pids={server.serving_pid()}"]
    result: dict[str, Any] = _client(args, env)
    print(f"  cpu: {result}", flush=True)
    return result


def brief(result: Mapping[str, Any]) -> str:
    cells = result.get("cells", [])
    parts = [f"N={c['n']}: {c['wall_s']}s x{c.get('ratio')} err={c['errors']}" for c in cells]
    return ", ".join(parts)
