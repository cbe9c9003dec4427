"""Load-generator process: drives a LangGraph API server with ``langgraph_sdk``.

It runs in its own process so its CPU never shares the server's loop. One
subcommand per measurement; each prints one JSON line:

    python -m bench.client scaling --url URL --ns 1,10,50 --latency 1 --page-url P [--lag]
    python -m bench.client ok --url URL --inflight 20 --latency 1 --page-url P [--lag]
    python -m bench.client cpu --url URL --runs 200 --concurrency 10 --pids 123 --page-url P
    python -m bench.client memory --url URL --n 100 --pids 123 --model-url M --page-url P
    python -m bench.client start --url URL --n 50 --latency 2 --model-url M --page-url P
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx
import uvloop
from langgraph_sdk.client import LangGraphClient

from bench.procs import cpu_seconds, rss_bytes
from bench.stats import summary_ms
from bench.workload import (
    run_batch,
    scaling_ratios,
    sdk_runs,
    stream_via_sdk,
    user_input,
    user_text,
)


def sdk_client(url: str) -> LangGraphClient:
    # The SDK's default client caps connections at 100 with a 5 s pool timeout,
    # which would throttle (and fail) the 200-run batches.
    http = httpx.AsyncClient(
        base_url=url,
        transport=httpx.AsyncHTTPTransport(retries=3),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=400),
        timeout=httpx.Timeout(connect=30, read=600, write=60, pool=None),
        trust_env=False,
    )
    return LangGraphClient(http)


async def new_threads(client: LangGraphClient, n: int) -> list[str]:
    threads = await asyncio.gather(*(client.threads.create() for _ in range(n)))
    return [t["thread_id"] for t in threads]


async def lag(url: str, reset: bool = False) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        response = await http.get(f"{url}/bench/lag", params={"reset": "1"} if reset else {})
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


async def warm_up(client: LangGraphClient, page_url: str) -> None:
    thread = (await new_threads(client, 1))[0]
    await stream_via_sdk(client, user_text(page_url, 0, 0), thread)


async def scaling(args: argparse.Namespace) -> dict[str, Any]:
    client = sdk_client(args.url)
    await warm_up(client, args.page_url)
    text = user_text(args.page_url, args.latency)
    cells: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    one_run_s = 0.0
    for n in args.ns:
        if one_run_s and n * one_run_s > args.max_wall:
            skipped.append({"n": n, "projected_wall_s": round(n * one_run_s, 1)})
            continue
        threads = await new_threads(client, n)
        if args.lag:
            await lag(args.url, reset=True)
        batch = await run_batch(n, sdk_runs(client, text, threads))
        if args.lag:
            batch.extra["lag"] = await lag(args.url)
        cells.append(batch.as_dict())
        if n == 1:
            one_run_s = batch.wall_s
    scaling_ratios(cells)
    return {"latency_s": args.latency, "cells": cells, "skipped": skipped}


async def ok_latency(args: argparse.Namespace) -> dict[str, Any]:
    """GET /ok back to back while ``inflight`` runs stream, then the loop lag meanwhile."""
    client = sdk_client(args.url)
    await warm_up(client, args.page_url)
    threads = await new_threads(client, args.inflight)
    text = user_text(args.page_url, args.latency)
    samples: list[float] = []
    if args.lag:
        await lag(args.url, reset=True)
    runs = asyncio.ensure_future(run_batch(args.inflight, sdk_runs(client, text, threads)))
    async with httpx.AsyncClient(base_url=args.url, trust_env=False, timeout=30) as http:
        await asyncio.sleep(0.2)  # let the runs get going
        while not runs.done():
            started = time.perf_counter()
            (await http.get("/ok")).raise_for_status()
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)
    batch = await runs
    result: dict[str, Any] = {"inflight": args.inflight, "ok": summary_ms(samples)}
    result["runs"] = batch.as_dict()
    if args.lag:
        result["lag"] = await lag(args.url)
    return result


async def cpu(args: argparse.Namespace) -> dict[str, Any]:
    client = sdk_client(args.url)
    await warm_up(client, args.page_url)
    text = user_text(args.page_url, 0, 0)
    rounds = max(1, args.runs // args.concurrency)
    threads = await new_threads(client, rounds * args.concurrency)
    before = sum(cpu_seconds(pid) for pid in args.pids)
    started = time.perf_counter()
    errors = 0
    for r in range(rounds):
        offset = r * args.concurrency
        chunk = threads[offset : offset + args.concurrency]
        batch = await run_batch(args.concurrency, sdk_runs(client, text, chunk))
        errors += batch.errors
    wall = time.perf_counter() - started
    cpu_s = sum(cpu_seconds(pid) for pid in args.pids) - before
    runs = rounds * args.concurrency
    return {
        "runs": runs,
        "concurrency": args.concurrency,
        "cpu_s": round(cpu_s, 3),
        "wall_s": round(wall, 3),
        "cpu_ms_per_run": round(cpu_s / runs * 1000, 2),
        "errors": errors,
    }


async def model_in_flight(model_url: str) -> int:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        response = await http.get(f"{model_url}/control/stats")
        return int(response.json()["in_flight"])


async def wait_model_in_flight(model_url: str, n: int, within: float) -> float:
    """Wait until ``n`` model calls are open at once; returns seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < within:
        if await model_in_flight(model_url) >= n:
            break
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def wait_model_plateau(model_url: str, n: int, within: float) -> int:
    """Wait until ``n`` model calls are open, or their number stops rising; return it.

    Admitting many runs takes the server a while, so the first runs can leave
    their model call before the last ones enter it: "all n at once" may never
    happen, but the peak is the moment to measure at.
    """
    started = time.perf_counter()
    best, best_at = 0, started
    while (now := time.perf_counter()) - started < within:
        current = await model_in_flight(model_url)
        if current > best:
            best, best_at = current, now
        if current >= n or (best and now - best_at > 0.5 and current < best):
            return current
        await asyncio.sleep(0.05)
    return await model_in_flight(model_url)


async def memory(args: argparse.Namespace) -> dict[str, Any]:
    """RSS with ``n`` runs parked in a slow model call, minus RSS when idle."""
    client = sdk_client(args.url)
    await warm_up(client, args.page_url)
    threads = await new_threads(client, args.n)
    idle = sum(rss_bytes(pid) for pid in args.pids)
    text = user_text(args.page_url, args.hold)
    runs = asyncio.ensure_future(run_batch(args.n, sdk_runs(client, text, threads)))
    await wait_model_in_flight(args.model_url, args.n, within=args.hold * 3)
    peak = 0
    for _ in range(10):
        peak = max(peak, sum(rss_bytes(pid) for pid in args.pids))
        await asyncio.sleep(0.05)
    in_flight = await model_in_flight(args.model_url)
    batch = await runs
    return {
        "n": args.n,
        "in_flight_seen": in_flight,
        "idle_rss_mb": round(idle / 2**20, 1),
        "loaded_rss_mb": round(peak / 2**20, 1),
        "kib_per_run": round((peak - idle) / args.n / 1024, 1),
        "errors": batch.errors,
    }


async def start(args: argparse.Namespace) -> dict[str, Any]:
    """Start ``n`` background runs; return once (nearly) all are inside a model call."""
    client = sdk_client(args.url)
    threads = await new_threads(client, args.n)
    text = user_text(args.page_url, args.latency)
    await asyncio.gather(*(client.runs.create(t, "agent", input=user_input(text)) for t in threads))
    started = time.perf_counter()
    in_flight = await wait_model_plateau(args.model_url, args.n, within=20) if args.n else 0
    return {
        "threads": threads,
        "waited_s": round(time.perf_counter() - started, 2),
        "in_flight": in_flight,
    }


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.client")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scaling")
    s.add_argument("--ns", type=_ints, default=[1, 10])
    s.add_argument("--latency", type=float, default=1.0)
    s.add_argument("--lag", action="store_true", help="read GET /bench/lag around each batch")
    s.add_argument("--max-wall", type=float, default=1e9, help="skip N projected beyond this")
    o = sub.add_parser("ok")
    o.add_argument("--inflight", type=int, default=20)
    o.add_argument("--latency", type=float, default=1.0)
    o.add_argument("--lag", action="store_true")
    c = sub.add_parser("cpu")
    c.add_argument("--runs", type=int, default=200)
    c.add_argument("--concurrency", type=int, default=10)
    c.add_argument("--pids", type=_ints, required=True)
    m = sub.add_parser("memory")
    m.add_argument("--n", type=int, default=100)
    m.add_argument("--hold", type=float, default=4.0, help="model latency keeping runs open")
    m.add_argument("--pids", type=_ints, required=True)
    m.add_argument("--model-url", required=True)
    t = sub.add_parser("start")
    t.add_argument("--n", type=int, required=True)
    t.add_argument("--latency", type=float, default=2.0)
    t.add_argument("--model-url", required=True)
    for p in (s, o, c, m, t):
        p.add_argument("--url", required=True)
        p.add_argument("--page-url", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    commands = {"scaling": scaling, "ok": ok_latency, "cpu": cpu, "memory": memory, "start": start}
    result = uvloop.run(commands[args.command](args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
