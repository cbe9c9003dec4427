"""``python -m bench [--quick] [--sections ...]``: run the benchmarks, write bench/results/.

Every measured thing runs in its own process: the local model, the page server,
PostgreSQL, the delay proxy, the servers under test, and the load generators.
This process only starts them, waits, and writes the report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.localmodel import LocalModel, run_local_model
from tests.support.postgres import fresh_database, throwaway_postgres

from bench import checkpoints, drain, report, sessions, targets
from bench.procs import PROJECT_DIR, page_server, run_worker
from bench.servers import hosted_server, hosted_server_available, langgraph_dev
from bench.sessions import Plan
from bench.workload import TOKEN_RATE, agent_env

SECTIONS = ("inprocess", "dev", "hosted", "checkpoints", "drain")
SERVER_MISSING = "not measured: server missing (src/agent/server.py / `python -m agent serve`)"

FULL = Plan(ns=(1, 10, 20, 50, 100, 200), latencies=(1.0, 0.25), blocking_max_wall_s=120)
QUICK = Plan(
    ns=(1, 10, 20, 50), latencies=(1.0,), blocking_max_wall_s=40, memory_n=50, cpu_runs=100
)


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=PROJECT_DIR
    ).stdout.strip()
    from importlib.metadata import version

    packages = ("langgraph", "langgraph-api", "langgraph-checkpoint-postgres", "psycopg", "uvloop")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_gb": round(mem_kb / 2**20, 1),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
        "packages": {p: version(p) for p in packages},
        "loops": "uvloop in every bench process and server",
    }


def guarded(results: dict[str, Any], key: str, action: Callable[[], Any]) -> None:
    """Run one section; a failure is recorded in the results instead of ending the run."""
    print(f"== {key}", flush=True)
    started = time.perf_counter()
    try:
        results[key] = action()
    except Exception as error:  # noqa: BLE001 - keep measuring the other sections
        traceback.print_exc()
        results[key] = {"error": f"{type(error).__name__}: {str(error)[:1500]}"}
    print(f"   {key} took {time.perf_counter() - started:.0f} s", flush=True)


class Bench:
    def __init__(self, plan: Plan, quick: bool, model: LocalModel, page: str, pg: str) -> None:
        self.plan, self.quick, self.model, self.page, self.pg = plan, quick, model, page, pg
        self.env = agent_env(model.base_url, page)

    def in_process(self) -> dict[str, Any]:
        ns = ",".join(map(str, self.plan.ns))
        agent: dict[str, Any] = {"by_latency": {}}
        for latency in self.plan.latencies:
            args = ["scaling", "--graph=agent", f"--ns={ns}", f"--latency={latency}"]
            result = run_worker(
                "bench.inprocess", [*args, f"--page-url={self.page}"], self.env, 900
            )
            agent["by_latency"][f"{latency:g}"] = result
            print(f"  async latency={latency:g}: {sessions.brief(result)}", flush=True)
        args = ["scaling", "--graph=blocking", f"--ns={ns}", "--latency=1"]
        args += [f"--max-wall={self.plan.blocking_max_wall_s}", f"--page-url={self.page}"]
        blocking = run_worker("bench.inprocess", args, self.env, 1800)
        print(f"  blocking: {sessions.brief(blocking)}", flush=True)
        return {"agent": agent, "blocking": {"by_latency": {"1": blocking}}}

    def cpu_in_process(self) -> dict[str, Any]:
        args = ["cpu", f"--runs={self.plan.cpu_runs}", f"--concurrency={self.plan.cpu_concurrency}"]
        result: dict[str, Any] = run_worker(
            "bench.inprocess", [*args, f"--page-url={self.page}"], self.env, 900
        )
        print(f"  in-process cpu: {result}", flush=True)
        return result

    def server_suite(self, server: Any) -> dict[str, Any]:
        # Memory first: RSS only grows to a high-water mark, so later batches would hide it.
        memory = sessions.memory(server, self.env, self.page, self.model.url, self.plan)
        return {
            "cold_start_s": round(server.cold_start_s, 2),
            "memory": memory,
            "scaling": sessions.scaling(
                server, self.env, self.page, self.plan, latencies=self.plan.latencies
            ),
            "ok": sessions.ok_under_load(server, self.env, self.page, self.plan),
            "cpu": sessions.cpu(server, self.env, self.page, self.plan),
        }

    def dev(self) -> dict[str, Any]:
        jobs = max(self.plan.ns) + 50
        with langgraph_dev(self.env, jobs_per_worker=jobs) as server:
            result = self.server_suite(server)
        result["jobs_per_worker"] = jobs
        return result

    def dev_blocking(self) -> dict[str, Any]:
        jobs = max(self.plan.ns) + 50
        config = "bench/langgraph.blocking.json"
        with langgraph_dev(
            self.env, config=config, jobs_per_worker=jobs, allow_blocking=True
        ) as server:
            scaling = sessions.scaling(
                server,
                self.env,
                self.page,
                self.plan,
                latencies=(1.0,),
                max_wall=self.plan.blocking_max_wall_s,
            )
            return {"cold_start_s": round(server.cold_start_s, 2), "scaling": scaling}

    def hosted(self) -> dict[str, Any]:
        if not hosted_server_available():
            return {"missing": SERVER_MISSING}
        with fresh_database(self.pg) as db:
            env = {**self.env, "DATABASE_URL": db, "SHUTDOWN_TIMEOUT": "10"}
            with hosted_server(env, lag_probe=True) as server:
                return self.server_suite(server)

    def checkpoints(self) -> dict[str, Any]:
        runs = {1: 20, 50: 150} if self.quick else {1: 30, 50: 200}
        ops = {1: 100, 50: 400} if self.quick else {1: 150, 50: 600}
        result = checkpoints.measure(
            self.pg, self.env, self.page, concurrencies=(1, 50), runs=runs, saver_ops=ops
        )
        result["speedups"] = {
            f"{kind}_c{c}_rtt{rtt:g}": checkpoints.speedup(result["cells"], kind, c, rtt)
            for kind in ("runs", "saver")
            for c in (1, 50)
            for rtt in (0.0, 2.0)
        }
        return result

    def drain(self) -> dict[str, Any]:
        if not hosted_server_available():
            return {"missing": SERVER_MISSING}
        ns = (0, 50) if self.quick else (0, 50, 200)
        return drain.measure(self.pg, self.env, self.page, self.model.url, ns, deadline_s=10.0)


@contextlib.contextmanager
def environment() -> Iterator[tuple[LocalModel, str, str]]:
    with (
        run_local_model(latency=1.0, token_rate=TOKEN_RATE) as model,
        page_server() as page,
        throwaway_postgres() as pg,
    ):
        yield model, page, pg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer N and runs (~5 min)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=",".join(SECTIONS))
    parser.add_argument("--out", type=Path, default=report.RESULTS_DIR)
    parser.add_argument(
        "--render", action="store_true", help="only re-write latest.md/png from latest.json"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.render:
        saved = json.loads((args.out / "latest.json").read_text())
        saved["targets"] = targets.evaluate(saved)
        report.write_all(saved, args.out)
        return 0
    sections = set(args.sections.split(","))
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    results: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine_info(),
        "plan": plan.__dict__,
        "notes": [
            "Model latency = time to first token of EACH model call; a run makes 2 calls.",
            "Scaling uses separate LangGraph threads per run; a batch's wall time runs from "
            "the first start to the last end.",
            "Blocking baseline N beyond the wall-time cap is skipped and its projected wall "
            "(N x wall(1)) shown instead.",
        ],
    }
    with environment() as (model, page, pg):
        bench = Bench(plan, args.quick, model, page, pg)
        steps: list[tuple[str, str, Callable[[], Any]]] = [
            ("inprocess", "in_process", bench.in_process),
            ("inprocess", "cpu_in_process", bench.cpu_in_process),
            ("dev", "dev", bench.dev),
            ("dev", "dev_blocking", bench.dev_blocking),
            ("hosted", "hosted", bench.hosted),
            ("checkpoints", "checkpoints", bench.checkpoints),
            ("drain", "drain", bench.drain),
        ]
        for section, key, action in steps:
            if section in sections:
                guarded(results, key, action)
                results["duration_s"] = round(time.perf_counter() - started)
                results["targets"] = targets.evaluate(results)
                report.write_all(results, args.out)
    print(json.dumps(results["targets"], indent=1))
    print(f"wrote {args.out}/latest.json, latest.md, latest.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
