"""Render benchmark and export results: rich tables for the terminal, Markdown and JSON for files."""
from __future__ import annotations

import json
from typing import Sequence

from rich.table import Table

from edgeprune.measurement.bench import BenchResult, Speedup

_COLS = ("mean", "std", "min", "p50", "p90", "p95", "p99", "max")


def _speedup_marks(results: Sequence[BenchResult], speedups: Sequence[Speedup]) -> list[str]:
    """Column text per result: the first is the baseline, the others carry their speedup over it."""
    if not speedups:
        return [""] * len(results)
    return ["baseline"] + [str(s) for s in speedups]


def bench_table(results: Sequence[BenchResult], speedups: Sequence[Speedup] = (), title: str = "latency (ms)") -> Table:
    table = Table(title=title)
    for col in ("model", "backend", "batch", "p50", "p90", "p95", "p99", "mean ± std", "min-max", "inf/s", "load s",
                "load RSS MB", "size MB", "speedup vs first"):
        table.add_column(col, justify="left" if col in ("model", "backend") else "right")
    for r, mark in zip(results, _speedup_marks(results, speedups)):
        st = r.stats
        size = f"{r.artifact_bytes / 2**20:.1f}" if r.artifact_bytes else "-"
        table.add_row(r.name, r.backend, str(r.batch), f"{st.p50:.2f}", f"{st.p90:.2f}", f"{st.p95:.2f}", f"{st.p99:.2f}",
                      f"{st.mean:.2f} ± {st.std:.2f}", f"{st.min:.2f}-{st.max:.2f}", f"{r.throughput:.1f}",
                      f"{r.compile_time_s or 0:.2f}", f"{r.load_rss_mb or 0:.0f}", size, mark)
    return table


def environment_line(env: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v and k != "edgeprune")
    return (f"{env.get('cpu')} | {env.get('logical_cores')} logical cores | {env.get('memory_gb')} GB | "
            f"Python {env.get('python')} | {versions} | {env.get('date')}")


def bench_markdown(results: Sequence[BenchResult], speedups: Sequence[Speedup] = ()) -> str:
    head = ["model", "backend", "batch", *(f"{c} ms" for c in _COLS), "inf/s", "load s", "speedup vs first"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r, mark in zip(results, _speedup_marks(results, speedups)):
        st = r.stats
        cells = [r.name, r.backend, str(r.batch), *(f"{getattr(st, c):.3f}" for c in _COLS),
                 f"{r.throughput:.1f}", f"{r.compile_time_s or 0:.2f}", mark]
        lines.append("| " + " | ".join(cells) + " |")
    if results:
        env = results[0].env
        lines += ["", "Environment: " + environment_line(env),
                  f"Rounds: {len(results[0].round_p50_ms)} interleaved{settle_note(results[0])}; "
                  "speedup = median of per-round p50 ratios (min-max)."]
    return "\n".join(lines) + "\n"


def settle_note(result: BenchResult) -> str:
    """', each after a 0.15 s untimed settle' when the result's rounds settled, else ''."""
    return f", each after a {result.settle_s:g} s untimed settle" if result.settle_s else ""


def bench_json(results: Sequence[BenchResult], speedups: Sequence[Speedup] = ()) -> str:
    doc = {"results": [r.to_dict() for r in results],
           "speedups": [s.__dict__ for s in speedups]}
    return json.dumps(doc, indent=2, default=str)


def export_table(reports) -> Table:
    table = Table(title="export validation")
    for col in ("artifact", "runtime", "exporter", "output", "shape", "max abs diff", "tolerance", "cosine", "ok"):
        table.add_column(col)
    for rep in reports:
        for c in rep.checks:
            table.add_row(rep.path.name, rep.runtime, rep.exporter, c.name, "x".join(map(str, c.shape)),
                          f"{c.max_abs_diff:.3g}", f"{c.tolerance:.3g}", f"{c.cosine:.6f}", "yes" if c.ok else "NO")
    return table
