"""report.html of a sweep: per (model, target) the Pareto front of measured speedup (min-max over the rounds as
error bars) against the held-out score, as embedded PNG plots, and a table of every config with its precision,
plan and where and when each stage ran. Self-contained: one file, no scripts, no network."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from edgeprune._io import write_text_atomic


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (speedup and score, higher is better)."""
    front = []
    for i, (s, q) in enumerate(points):
        beaten = any((s2 >= s and q2 >= q) and (s2 > s or q2 > q) for j, (s2, q2) in enumerate(points) if j != i)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _speed(row: dict) -> float | None:
    s = row.get("speedup") or {}
    return s.get("median")


def plot(rows: list[dict], title: str) -> str:
    """One (model, target)'s configs as a base64 PNG: every point, its spread, the front joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(_speed(r), r["score"]) for r in rows]
    front = pareto(pts)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for r, (s, q) in zip(rows, pts):
        lo, hi = r["speedup"]["min"], r["speedup"]["max"]
        ax.errorbar([s], [q], xerr=[[s - lo], [hi - s]], fmt="o", color="tab:blue" if r["precision"] == "fp32" else "tab:orange",
                    capsize=3, alpha=0.8)
        ax.annotate(f"{next(iter(r['budget'].values()))}x {r['chosen_precision']}", (s, q), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-", color="tab:green", label="Pareto front")
    ax.set_xlabel("measured speedup (median, min-max over rounds)")
    ax.set_ylabel(f"{rows[0]['metric']} on held-out data")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _cells(r: dict) -> list[str]:
    s = r.get("speedup") or {}
    speed = f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})" if s else "not measured"
    stages = "; ".join(f"{x['stage']} {x['end'] - x['start']:.0f}s on {str(x['node'])[:8]}" for x in r.get("stages", []))
    plan = list((r.get("plan") or {}).items())
    narrowed = ", ".join(f"{name} {k}/{w}" for name, (k, w) in plan[:4]) + (f" (+{len(plan) - 4} more)" if len(plan) > 4 else "")
    return [r["model"], r["target"], ", ".join(f"{k} {v}" for k, v in r["budget"].items()), r["precision"], r["status"],
            speed, "-" if r.get("score") is None else f"{r['score']:.2f}", r.get("chosen_precision", "-"),
            "-" if r.get("macs_kept") is None else f"{100 * r['macs_kept']:.0f}%",
            narrowed or ("dense widths" if r["status"] == "ok" else "-"), r.get("reason") or stages]


def render(rows: list[dict]) -> str:
    e = html.escape
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["status"] == "ok" and _speed(r) is not None and r.get("score") is not None:
            groups.setdefault((r["model"], r["target"]), []).append(r)
    figs = "".join(f"<figure><img alt='{e(m)} on {e(t)}' src='data:image/png;base64,{plot(g, f'{m} on {t}')}'>"
                   f"<figcaption>{e(m)} on {e(t)}: {len(g)} configs</figcaption></figure>" for (m, t), g in groups.items())
    head = ["model", "target", "budget", "precision asked", "status", "measured speedup", "score", "shipped",
            "MACs kept", "plan (kept/width)", "stages (or why it failed)"]
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in _cells(r)) + "</tr>" for r in rows)
    done = sum(r["status"] == "ok" for r in rows)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>edgeprune sweep</title><style>"
            "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:3px 6px}figure{display:inline-block;margin:0 1em 1em 0}</style></head>"
            f"<body><h1>edgeprune sweep</h1><p>{done} of {len(rows)} configs done, {len(rows) - done} failed. "
            "Speedups: median of interleaved rounds against the dense model on the target (min-max); score: the "
            "model's metric on held-out data.</p>" + (figs or "<p>No finished config to plot.</p>") +
            "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + f"</tr>{body}</table></body></html>")


def write_report(rows: list[dict], path: Path) -> Path:
    return write_text_atomic(path, render(rows))
