"""Write ``bench/results/latest.{json,md,png}`` from one run's results."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_all(results: Mapping[str, Any], out_dir: Path = RESULTS_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "latest.md").write_text(markdown(results))
    plot(results, out_dir / "latest.png")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join("-" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _scaling_rows(label: str, scaling: Mapping[str, Any] | None) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for latency, result in (scaling or {}).get("by_latency", {}).items():
        for c in result.get("cells", []):
            lag = c.get("lag") or {}
            rows.append(
                [
                    label,
                    f"{float(latency) * 1000:g} ms",
                    c["n"],
                    c["wall_s"],
                    c.get("ratio"),
                    c["throughput_runs_per_s"],
                    c["latency"]["p50_ms"],
                    c["latency"]["p95_ms"],
                    c["latency"]["p99_ms"],
                    lag.get("p99_ms"),
                    lag.get("max_ms"),
                    c.get("machine_cpu_busy_pct"),
                    c["errors"],
                ]
            )
        for s in result.get("skipped", []):
            projected = f"skipped (projected {s['projected_wall_s']} s)"
            rows.append([label, f"{float(latency) * 1000:g} ms", s["n"], projected] + [None] * 9)
    return rows


def _scaling_sources(results: Mapping[str, Any]) -> list[tuple[str, Any]]:
    in_process = results.get("in_process") or {}
    return [
        ("async, in-process", in_process.get("agent")),
        ("async, self-hosted+PG", (results.get("hosted") or {}).get("scaling")),
        ("async, langgraph dev", (results.get("dev") or {}).get("scaling")),
        ("BLOCKING, in-process", in_process.get("blocking")),
        ("BLOCKING, dev --allow-blocking", (results.get("dev_blocking") or {}).get("scaling")),
    ]


def markdown(results: Mapping[str, Any]) -> str:
    m = results.get("machine", {})
    parts = [
        "# Benchmark results\n",
        f"Run {results.get('timestamp')} ({results.get('mode')} mode, "
        f"{results.get('duration_s')} s). Machine: {m.get('cpus')} CPUs ({m.get('cpu_model')}), "
        f"{m.get('mem_gb')} GB, load average at start {m.get('loadavg')}, "
        f"Python {m.get('python')}, commit {m.get('commit')}. "
        "Numbers are from ONE run on a shared, noisy machine: compare ratios within it.\n",
        "Workload per run: prompt fetch over HTTP -> model asks for `fetch_url` -> "
        "tool GETs a local page -> model streams the answer (2 model calls, 50 tok/s "
        "after the first-token latency).\n",
        "## Targets (reported, not asserted)\n",
        _table(
            ["target", "goal", "measured", "status", "by", "note"],
            (
                [t["target"], t["goal"], t["measured"], t["status"].upper(), t["by"], t["note"]]
                for t in results.get("targets", [])
            ),
        ),
        "## 1-2. Concurrency scaling (wall(N)/wall(1), ideal 1.0; blocking expected ~N)\n",
        _table(
            [
                "path",
                "model latency",
                "N",
                "wall s",
                "ratio",
                "runs/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "loop lag p99 ms",
                "lag max ms",
                "machine CPU %",
                "errors",
            ],
            (row for label, s in _scaling_sources(results) for row in _scaling_rows(label, s)),
        ),
    ]
    parts.append(_notes(results))
    parts.append(_liveness(results))
    parts.append(_checkpoints(results))
    parts.append(_drain(results))
    parts.append(_resources(results))
    return "\n".join(parts)


def _notes(results: Mapping[str, Any]) -> str:
    notes = [f"- {n}" for n in results.get("notes", [])]
    return ("\n".join(notes) + "\n") if notes else ""


def _liveness(results: Mapping[str, Any]) -> str:
    rows = []
    for label, key in (("self-hosted+PG", "hosted"), ("langgraph dev", "dev")):
        section = results.get(key) or {}
        ok = section.get("ok")
        if not ok:
            rows.append([label, section.get("missing") or section.get("error") or "not run"])
            continue
        lag = ok.get("lag") or {}
        rows.append(
            [
                label,
                ok["inflight"],
                ok["ok"]["p50_ms"],
                ok["ok"]["p99_ms"],
                ok["ok"]["max_ms"],
                lag.get("p50_ms"),
                lag.get("p99_ms"),
                lag.get("max_ms"),
                ok["runs"]["errors"],
            ]
        )
    headers = ["server", "in flight", "/ok p50 ms", "/ok p99 ms", "/ok max ms"]
    headers += ["lag p50 ms", "lag p99 ms", "lag max ms", "run errors"]
    return "## 3. Liveness and event-loop lag during load\n\n" + _table(headers, rows)


def _checkpoints(results: Mapping[str, Any]) -> str:
    section = results.get("checkpoints") or {}
    if "cells" not in section:
        return f"## 4. Checkpoint throughput\n\n{section.get('error', 'not run')}\n"
    rows = [
        [
            c["kind"],
            c["saver"],
            c["concurrency"],
            f"{c['rtt_ms']:g}",
            c.get("runs_per_s"),
            c.get("checkpoints_per_s"),
            c.get("worker_cpu_ms_per_run"),
            c.get("errors", 0),
        ]
        for c in section["cells"]
    ]
    speedups = ", ".join(f"{k}: x{v}" for k, v in section.get("speedups", {}).items())
    measured = section.get("measured_rtt_ms", {})
    text = "## 4. Checkpoint throughput (zero-latency model)\n\n"
    text += (
        "`runs` = whole agent runs/s; `saver` = `aput`+`aput_writes` pairs/s with nothing "
        f"else going on. Proxy round trip measured with `SELECT 1`: {measured} ms. "
        f"Pooled over stock: {speedups or '-'}.\n\n"
    )
    headers = ["kind", "saver", "concurrency", "added RTT ms", "runs/s", "checkpoints/s"]
    headers += ["worker CPU ms/run", "errors"]
    missing = "".join(f"\n**Missing:** {m}\n" for m in section.get("missing", []))
    return text + _table(headers, rows) + missing


def _drain(results: Mapping[str, Any]) -> str:
    drain = results.get("drain") or {}
    if "rows" not in drain:
        return f"## 5. Drain on SIGTERM\n\n{drain.get('missing') or drain.get('error')}\n"
    rows = [
        [
            r["n"],
            r["in_flight_at_sigterm"],
            r["deadline_s"],
            r["exit_s"],
            r["exit_code"],
            r["with_checkpoint"],
            r["finished"],
            r["error_lines"],
            "<br>".join(r["first_errors"][:2]).replace("|", "/") or "",
            r.get("server_summary", ""),
        ]
        for r in drain["rows"]
    ]
    headers = ["N", "model calls open at SIGTERM", "deadline s", "SIGTERM->exit s", "exit code"]
    headers += ["threads with checkpoint", "threads finished", "error lines", "first errors"]
    headers += ["server's drain summary"]
    return (
        "## 5. Drain on SIGTERM (self-hosted)\n\n"
        f"Each run waits {drain['run_latency_s']} s per model call (2 calls per run); SIGTERM "
        "is sent when the number of open model calls peaks. `threads finished` = the "
        "latest checkpoint holds the final answer; the rest were cancelled by the drain "
        "deadline and show whether their final checkpoint was still written.\n\n"
        + _table(headers, rows)
    )


def _resources(results: Mapping[str, Any]) -> str:
    rows = []
    for label, key in (("self-hosted+PG", "hosted"), ("langgraph dev", "dev")):
        s = results.get(key) or {}
        mem, cpu = s.get("memory") or {}, s.get("cpu") or {}
        rows.append(
            [
                label,
                s.get("cold_start_s"),
                mem.get("idle_rss_mb"),
                mem.get("n"),
                mem.get("kib_per_run"),
                cpu.get("cpu_ms_per_run"),
            ]
        )
    drain_rows = (results.get("drain") or {}).get("rows") or []
    colds = sorted(r["cold_start_s"] for r in drain_rows if "cold_start_s" in r)
    if colds:
        label = f"`python -m agent serve` (median of {len(colds)} drain launches)"
        rows.append([label, colds[len(colds) // 2], None, None, None, None])
    base = results.get("cpu_in_process") or {}
    rows.append(["in-process InMemorySaver", None, None, None, None, base.get("cpu_ms_per_run")])
    headers = ["where", "cold start to /ok s", "idle RSS MB", "N in flight", "KiB per run"]
    headers += ["CPU ms per run"]
    return "## 6. Resources\n\n" + _table(headers, rows)


def plot(results: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    styles = {
        "async, in-process": ("tab:blue", "o", "-"),
        "async, self-hosted+PG": ("tab:green", "s", "-"),
        "async, langgraph dev": ("tab:purple", "^", "-"),
        "BLOCKING, in-process": ("tab:red", "o", "--"),
        "BLOCKING, dev --allow-blocking": ("tab:orange", "^", "--"),
    }
    all_n: list[int] = []
    for label, scaling in _scaling_sources(results):
        cells = (scaling or {}).get("by_latency", {}).get("1", {}).get("cells", [])
        points = [(c["n"], c["ratio"]) for c in cells if c.get("ratio")]
        if not points:
            continue
        color, marker, line = styles[label]
        ns, ratios = zip(*points, strict=True)
        all_n += ns
        ax.plot(ns, ratios, marker=marker, linestyle=line, color=color, label=label, lw=2)
    if all_n:
        top = max(all_n)
        ax.plot([1, top], [1, 1], color="grey", lw=1, linestyle=":", label="ideal (1.0)")
        ax.plot([1, top], [1, top], color="black", lw=1, linestyle=":", label="fully serial (N)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = sorted(set(all_n))
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.set_yticks([1, 2, 5, 10, 20, 50, 100, 200], ["1", "2", "5", "10", "20", "50", "100", "200"])
    ax.minorticks_off()
    fig.text(
        0.99,
        0.01,
        "Blocking runs beyond the wall-time cap are not run (they would take N x wall(1)). "
        f"{results.get('timestamp', '')}, {results.get('machine', {}).get('cpus')} CPUs, "
        "one run of `python -m bench`.",
        ha="right",
        va="bottom",
        fontsize=8,
        color="dimgray",
    )
    ax.set_xlabel("concurrent runs N (separate threads)")
    ax.set_ylabel("wall(N) / wall(1)   (lower is better)")
    ax.set_title("Concurrency scaling, 1 s model latency: async nodes vs blocking baseline")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
