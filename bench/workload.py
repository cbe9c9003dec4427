"""One realistic run, and a batch of them started at once.

A run: fetch the system prompt over HTTP -> the model asks for ``fetch_url`` ->
the tool GETs a local page -> the model streams its answer. The user text holds
the page URL (the local model calls ``fetch_url`` for any http URL) plus
``[[latency=..]]`` / ``[[token_rate=..]]`` directives, so one model server can
serve every latency the benchmark needs.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.stats import summary_ms

TOKEN_RATE = 50.0
EXPECTED_ANSWER = "Tool result: HTTP 200"


class WrongAnswer(RuntimeError):
    """The run finished without the tool round trip the workload is made of."""


def agent_env(model_base_url: str, page_url: str) -> dict[str, str]:
    """Environment for every process that runs the agent (read at import)."""
    return {
        "OPENAI_BASE_URL": model_base_url,
        "AGENT_MODEL": "local-model",
        "AGENT_FETCH_ALLOWLIST": "127.0.0.1",
        # A prompt fetch on every run (TTL 0): real async I/O, not a cache hit.
        "AGENT_PROMPT_SOURCE": f"{page_url}/prompt",
        "AGENT_PROMPT_TTL": "0",
        "OPENAI_API_KEY": "",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
    }


def user_text(page_url: str, latency: float, token_rate: float = TOKEN_RATE) -> str:
    return (
        f"Please read {page_url}/page and tell me what it says. "
        f"[[latency={latency:g}]] [[token_rate={token_rate:g}]]"
    )


def user_input(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def check_answer(text: str) -> None:
    if EXPECTED_ANSWER not in text:
        raise WrongAnswer(f"expected {EXPECTED_ANSWER!r} in the streamed answer, got {text!r}")


async def stream_in_process(graph: Any, text: str, thread_id: str) -> None:
    """Run the compiled graph in this process, consuming its token stream."""
    answer: list[str] = []
    config = {"configurable": {"thread_id": thread_id}}
    async for chunk, metadata in graph.astream(user_input(text), config, stream_mode="messages"):
        if metadata.get("langgraph_node") == "call_model" and isinstance(chunk.content, str):
            answer.append(chunk.content)
    check_answer("".join(answer))


async def stream_via_sdk(client: Any, text: str, thread_id: str) -> None:
    """Run on a LangGraph API server through ``langgraph_sdk``, consuming the token stream."""
    answer: list[str] = []
    async for part in client.runs.stream(
        thread_id, "agent", input=user_input(text), stream_mode="messages-tuple"
    ):
        if part.event == "error":
            raise RuntimeError(f"server error event: {part.data}")
        if part.event == "messages":
            chunk, metadata = part.data
            content = chunk.get("content")
            if metadata.get("langgraph_node") == "call_model" and isinstance(content, str):
                answer.append(content)
    check_answer("".join(answer))


@dataclass
class Batch:
    """N runs started together."""

    n: int
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        ok = len(self.latencies_s)
        return {
            "n": self.n,
            "wall_s": round(self.wall_s, 3),
            "throughput_runs_per_s": round(ok / self.wall_s, 2) if self.wall_s else 0.0,
            "latency": summary_ms(self.latencies_s),
            "errors": self.errors,
            "first_error": self.first_error,
            **self.extra,
        }


def cpu_ticks() -> tuple[int, int]:
    """Machine-wide (busy, total) CPU ticks from /proc/stat (a tiny in-memory read)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total else 0.0


RunFn = Callable[[int], Awaitable[None]]


def in_process_runs(graph: Any, text: str, thread_ids: Sequence[str]) -> RunFn:
    """Run ``i`` of a batch: ``graph`` in this process on ``thread_ids[i]``."""

    def run(i: int) -> Awaitable[None]:
        return stream_in_process(graph, text, thread_ids[i])

    return run


def sdk_runs(client: Any, text: str, thread_ids: Sequence[str]) -> RunFn:
    """Run ``i`` of a batch: through the SDK on ``thread_ids[i]``."""

    def run(i: int) -> Awaitable[None]:
        return stream_via_sdk(client, text, thread_ids[i])

    return run


async def run_batch(n: int, one_run: Callable[[int], Awaitable[None]]) -> Batch:
    """Start ``n`` runs at once; wall time is from the first start to the last end.

    Also records how busy the whole machine was meanwhile: near 100% means the
    batch was CPU-bound (all processes, both cores), not waiting on anything.
    """
    batch = Batch(n=n)
    ticks = cpu_ticks()

    async def timed(i: int) -> None:
        started = time.perf_counter()
        try:
            await one_run(i)
        except Exception as error:  # noqa: BLE001 - a failed run is a data point
            batch.errors += 1
            if not batch.first_error:
                batch.first_error = "".join(traceback.format_exception_only(error)).strip()[:500]
        else:
            batch.latencies_s.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(timed(i) for i in range(n)))
    batch.wall_s = time.perf_counter() - started
    batch.extra["machine_cpu_busy_pct"] = busy_pct(ticks, cpu_ticks())
    return batch


def scaling_ratios(cells: Sequence[dict[str, Any]]) -> None:
    """Add wall(N)/wall(1) to each cell, in place."""
    base = next((c["wall_s"] for c in cells if c["n"] == 1 and c["wall_s"]), None)
    for cell in cells:
        cell["ratio"] = round(cell["wall_s"] / base, 3) if base else None
