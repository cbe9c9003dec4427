"""Worker process: runs the graph in THIS process and prints one JSON result.

The orchestrator (``python -m bench``) starts one worker per measurement, with
the agent's env already set, so nothing else shares this loop:

    python -m bench.inprocess scaling --graph agent --ns 1,10,50 --latency 1 --page-url URL
    python -m bench.inprocess checkpoint --saver stock --db URL --concurrency 50 --runs 300 ...
    python -m bench.inprocess cpu --runs 200 --concurrency 10 --page-url URL
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvloop

from bench.lag import LagProbe
from bench.workload import (
    in_process_runs,
    run_batch,
    scaling_ratios,
    stream_in_process,
    user_text,
)


def _load_graph(kind: str, saver: Any) -> Any:
    if kind == "blocking":
        from bench.blocking_graph import builder

        return builder.compile(checkpointer=saver, name="agent-blocking")
    from agent.graph import build_graph

    return build_graph(saver)


async def scaling(args: argparse.Namespace) -> dict[str, Any]:
    from langgraph.checkpoint.memory import InMemorySaver

    graph = _load_graph(args.graph, InMemorySaver())
    probe = LagProbe()
    probe.start()
    # Warm-up: builds the per-loop clients and imports lazily loaded modules.
    await stream_in_process(graph, user_text(args.page_url, 0, 0), "warmup")
    text = user_text(args.page_url, args.latency)
    cells: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    one_run_s = 0.0
    for n in args.ns:
        projected = n * one_run_s
        if args.graph == "blocking" and one_run_s and projected > args.max_wall:
            skipped.append({"n": n, "projected_wall_s": round(projected, 1)})
            continue
        prefix = uuid.uuid4().hex
        probe.reset()
        cpu_before = time.process_time()
        batch = await run_batch(
            n, in_process_runs(graph, text, [f"{prefix}-{i}" for i in range(n)])
        )
        batch.extra["cpu_s"] = round(time.process_time() - cpu_before, 3)
        batch.extra["lag"] = probe.summary()
        cells.append(batch.as_dict())
        if n == 1:
            one_run_s = batch.wall_s
    await probe.stop()
    scaling_ratios(cells)
    return {"graph": args.graph, "latency_s": args.latency, "cells": cells, "skipped": skipped}


@asynccontextmanager
async def _saver(kind: str, db: str, pool_size: int) -> AsyncIterator[Any]:
    if kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        yield InMemorySaver()
        return
    from agent.checkpointer import PostgresSettings, open_pool

    settings = PostgresSettings(url=db, min_size=pool_size, max_size=pool_size)
    async with open_pool(settings) as pool:
        if kind == "stock":
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

            saver: Any = AsyncPostgresSaver(pool)
        else:
            module = importlib.import_module("agent.pooled_saver")
            saver = module.PooledPostgresSaver(pool)
        await saver.setup()
        yield saver


async def checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    text = user_text(args.page_url, 0, 0)
    async with _saver(args.saver, args.db, args.pool_size) as saver:
        graph = _load_graph("agent", saver)
        for i in range(3):
            await stream_in_process(graph, text, f"warmup-{uuid.uuid4().hex}-{i}")
        prefix = uuid.uuid4().hex
        remaining = args.runs
        errors: list[str] = []

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                try:
                    await stream_in_process(graph, text, f"{prefix}-{remaining}")
                except Exception as error:  # noqa: BLE001 - counted, reported
                    errors.append(repr(error)[:300])

        started, cpu_before = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        wall = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_before
    done = args.runs - len(errors)
    return {
        "saver": args.saver,
        "concurrency": args.concurrency,
        "runs": args.runs,
        "wall_s": round(wall, 3),
        "runs_per_s": round(done / wall, 2),
        "worker_cpu_ms_per_run": round(cpu_s / args.runs * 1000, 2),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


async def saverops(args: argparse.Namespace) -> dict[str, Any]:
    """The saver alone: ``aput`` + ``aput_writes`` pairs from ``concurrency`` tasks."""
    from langgraph.checkpoint.base import empty_checkpoint

    async with _saver(args.saver, args.db, args.pool_size) as saver:
        prefix = uuid.uuid4().hex
        remaining = args.runs

        async def one(thread_id: str, step: int) -> None:
            config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"messages": "x" * 200}
            checkpoint["channel_versions"] = {"messages": step + 1}
            metadata: Any = {"source": "loop", "step": step}
            saved = await saver.aput(config, checkpoint, metadata, {"messages": step + 1})
            await saver.aput_writes(saved, [("messages", "y" * 100)], task_id=uuid.uuid4().hex)

        async def worker(w: int) -> None:
            nonlocal remaining
            step = 0
            while remaining > 0:
                remaining -= 1
                await one(f"{prefix}-{w}", step)
                step += 1

        await one(f"{prefix}-warmup", 0)
        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
        wall = time.perf_counter() - started
    return {
        "saver": args.saver,
        "concurrency": args.concurrency,
        "checkpoints": args.runs,
        "wall_s": round(wall, 3),
        "checkpoints_per_s": round(args.runs / wall, 1),
    }


async def cpu(args: argparse.Namespace) -> dict[str, Any]:
    from langgraph.checkpoint.memory import InMemorySaver

    graph = _load_graph("agent", InMemorySaver())
    text = user_text(args.page_url, 0, 0)
    for i in range(3):
        await stream_in_process(graph, text, f"warmup-{i}")
    prefix = uuid.uuid4().hex
    rounds = max(1, args.runs // args.concurrency)
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    errors = 0
    for r in range(rounds):
        thread_ids = [f"{prefix}-{r}-{i}" for i in range(args.concurrency)]
        batch = await run_batch(args.concurrency, in_process_runs(graph, text, thread_ids))
        errors += batch.errors
    runs = rounds * args.concurrency
    cpu_s = time.process_time() - cpu_before
    return {
        "runs": runs,
        "concurrency": args.concurrency,
        "cpu_s": round(cpu_s, 3),
        "wall_s": round(time.perf_counter() - wall_before, 3),
        "cpu_ms_per_run": round(cpu_s / runs * 1000, 2),
        "errors": errors,
    }


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scaling")
    s.add_argument("--graph", choices=["agent", "blocking"], default="agent")
    s.add_argument("--ns", type=_ints, default=[1, 10])
    s.add_argument("--latency", type=float, default=1.0)
    s.add_argument("--max-wall", type=float, default=150.0, help="skip blocking N beyond this")
    c = sub.add_parser("checkpoint")
    c.add_argument("--saver", choices=["memory", "stock", "pooled"], required=True)
    c.add_argument("--db", default="")
    c.add_argument("--concurrency", type=int, default=1)
    c.add_argument("--runs", type=int, default=100)
    c.add_argument("--pool-size", type=int, default=20)
    o = sub.add_parser("saverops")
    o.add_argument("--saver", choices=["memory", "stock", "pooled"], required=True)
    o.add_argument("--db", default="")
    o.add_argument("--concurrency", type=int, default=1)
    o.add_argument("--runs", type=int, default=500, help="checkpoints to write")
    o.add_argument("--pool-size", type=int, default=20)
    o.add_argument("--page-url", default="")
    u = sub.add_parser("cpu")
    u.add_argument("--runs", type=int, default=200)
    u.add_argument("--concurrency", type=int, default=10)
    for p in (s, c, u):
        p.add_argument("--page-url", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    commands = {"scaling": scaling, "checkpoint": checkpoint, "saverops": saverops, "cpu": cpu}
    command = commands[args.command]
    result = uvloop.run(command(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
