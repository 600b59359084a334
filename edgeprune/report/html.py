"""`edgeprune report`: one self-contained report.html (plots as base64 PNG) and report.md per OUTDIR.

Inputs, all optional, missing sections are skipped:
  OUTDIR/report.json   schema "edgeprune.report/1" (written by the optimizer), or an `edgeprune bench
                       --json` file (same "results"/"speedups" keys, no "schema"):
    model, profile, precision: str
    env:      environment() of the host run (else taken from the first result)
    results:  [BenchResult.to_dict()]; the first is the baseline (dense). Optional per result:
              "accelerated": bool (overrides the measured verdict), "samples_ms": [float] (violin plot)
    speedups: [{baseline, candidate, median, min, max, rounds}] of every result over the first
    layers:   [{name, orig_width?, kept_width?, sparsity? (0..1), time_ms?}]       per-layer plan/outcome
    configs:  [{name, accuracy, latency_ms, selected?: bool}]                     every configuration tried
    predicted_vs_measured: [{name, predicted_ms, measured_ms}]
  OUTDIR/results*.json device results from edgeprune_run.py (schema "edgeprune.device-results/1":
                       results, check, layers [{name, op_type, exec_type, time_ms}], env, remote?).

"accelerated" is measured, never assumed: yes when the candidate beat the baseline in every
interleaved round (speedup min > 1); for device runs made one after the other, when its slowest
round p50 beats the baseline's fastest.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

from edgeprune.errors import ConfigError

REPORT_SCHEMA = "edgeprune.report/1"
DEVICE_SCHEMA = "edgeprune.device-results/1"
_STAT_KEYS = ("n", "mean", "std", "min", "p50", "p90", "p95", "p99", "max")


def bench_result_from_dict(d: dict):
    """A BenchResult from its to_dict() form (tolerant of missing optional fields)."""
    from edgeprune.measurement.bench import BenchResult, LatencyStats

    stats = d.get("stats") or {}
    try:
        st = LatencyStats(**{k: stats[k] for k in _STAT_KEYS})
        return BenchResult(name=str(d.get("name", "?")), backend=str(d.get("backend", "?")), batch=int(d.get("batch", 1)),
                           stats=st, round_p50_ms=list(d.get("round_p50_ms") or []), warmup=int(d.get("warmup", 0)),
                           compile_time_s=d.get("compile_time_s"), settle_s=float(d.get("settle_s") or 0.0), peak_rss_mb=d.get("peak_rss_mb"),
                           load_rss_mb=d.get("load_rss_mb"), artifact_bytes=d.get("artifact_bytes"),
                           options=d.get("options") or {}, env=d.get("env") or {})
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"result '{d.get('name', '?')}' has no usable stats ({err})", hint="pass a results file from edgeprune") from None


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {path}: {err}", hint="fix or remove the file") from None


def collect(source: str | os.PathLike) -> tuple[dict, list[dict], Path]:
    """(report doc, device result docs, folder to write into) from OUTDIR or one JSON file."""
    source = Path(source)
    if source.is_file():
        doc, folder, devices = _read(source), source.parent, []
        if isinstance(doc, dict) and doc.get("schema") == DEVICE_SCHEMA:
            doc, devices = {}, [_read(source)]
    elif source.is_dir():
        folder = source
        doc = _read(source / "report.json") if (source / "report.json").is_file() else {}
        devices = []
        for p in sorted(source.glob("results*.json")):
            d = _read(p)
            if isinstance(d, dict) and d.get("schema") == DEVICE_SCHEMA:
                devices.append(d)
            elif isinstance(d, dict) and not doc and "results" in d:
                doc = d  # an `edgeprune bench --json` output saved as results.json
    else:
        raise ConfigError(f"not found: {source}", hint="pass the output folder or a bench --json file")
    if not isinstance(doc, dict):
        raise ConfigError(f"{source} is not a JSON object", hint="pass report.json or a bench --json file")
    if not doc.get("results") and not devices and not any(doc.get(k) for k in ("layers", "configs", "predicted_vs_measured")):
        raise ConfigError(f"nothing to report in {source}: no results, layers, configs or device results",
                          hint="run `edgeprune bench MODEL --json OUTDIR/report.json` first")
    return doc, devices, folder


def _where(d: dict) -> str:
    return (d.get("remote") or {}).get("target") or (d.get("env") or {}).get("hostname") or "device"


def _rows(doc: dict, devices: list[dict]) -> list[dict]:
    """Summary rows: host results (speedups from the interleaved rounds), then each device run."""
    rows = []
    results = [bench_result_from_dict(r) for r in doc.get("results") or []]
    speedups = {s.get("candidate"): s for s in doc.get("speedups") or [] if isinstance(s, dict)}
    for i, (r, raw) in enumerate(zip(results, doc.get("results") or [])):
        sp = speedups.get(r.name) if i else None
        verdict = "baseline" if i == 0 and len(results) > 1 else ""
        if sp:
            verdict = "yes" if sp["min"] > 1 else ("no (within noise)" if sp["median"] > 1 else "no")
        if isinstance(raw.get("accelerated"), bool):
            verdict = "yes" if raw["accelerated"] else "no"
        rows.append({"r": r, "where": "host", "speedup": f"{sp['median']:.2f}x ({sp['min']:.2f}-{sp['max']:.2f})" if sp else "",
                     "accelerated": verdict, "check": "", "samples": raw.get("samples_ms")})
    firsts: dict[str, Any] = {}
    for d in devices:
        where = _where(d)
        check = "" if "check" not in d else ("ok" if d["check"].get("ok") else "FAILED")
        for raw in d.get("results") or []:
            r = bench_result_from_dict(raw)
            base = firsts.setdefault(where, r)
            speed, verdict = "", ""
            if base is not r and r.stats.p50 > 0:
                speed = f"{base.stats.p50 / r.stats.p50:.2f}x (p50, sequential runs)"
                faster = max(r.round_p50_ms or [r.stats.p50]) < min(base.round_p50_ms or [base.stats.p50])
                verdict = "yes" if faster else "no"
            elif sum(1 for x in devices for _ in x.get("results") or []) > 1:
                verdict = "baseline"
            rows.append({"r": r, "where": where, "speedup": speed, "accelerated": verdict, "check": check, "samples": None})
    return rows


# -- plots -------------------------------------------------------------------------------------
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(h: float = 3.6):
    from matplotlib.figure import Figure  # no pyplot: no global backend or GUI state

    fig = Figure(figsize=(9, h))
    return fig, fig.add_subplot()


def plot_latency(rows: list[dict]) -> str:
    fig, ax = _figure(max(2.2, 0.55 * len(rows) + 1.2))
    for y, row in enumerate(rows):
        r, st = row["r"], row["r"].stats
        color = "0.45" if row["accelerated"] == "baseline" or y == 0 else "tab:blue"
        if row["samples"]:
            ax.violinplot([row["samples"]], positions=[y], vert=False, showextrema=False, widths=0.7)
        ax.hlines(y, st.min, st.max, color=color, lw=1)
        ax.hlines(y, st.p50, st.p95, color=color, lw=7, alpha=0.6)
        ax.plot([st.p99], [y], "|", color=color, ms=14)
        ax.plot(r.round_p50_ms, [y] * len(r.round_p50_ms), "x", color="k", ms=5)
        ax.plot([st.p50], [y], "o", color="white", mec=color, ms=7)
    ax.set_yticks(range(len(rows)), [f"{row['r'].name} | {row['r'].backend} | {row['where']}" for row in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")  # one slow outlier (max) would otherwise squash every p50 into a dot
    ax.set_xlabel("latency (ms, log scale): line min-max, bar p50-p95, | p99, o p50, x round p50s")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def plot_layers(layers: list[dict]) -> str | None:
    rows = [l for l in layers if isinstance(l, dict) and (l.get("kept_width") is not None or l.get("sparsity") is not None)]
    if not rows:
        return None
    fig, ax = _figure()
    xs = range(len(rows))
    kept = [(l["kept_width"] / l["orig_width"]) if l.get("kept_width") is not None and l.get("orig_width") else None for l in rows]
    if any(k is not None for k in kept):
        ax.bar([x - 0.2 for x in xs], [k or 0 for k in kept], 0.4, label="kept width (fraction)")
    if any(l.get("sparsity") is not None for l in rows):
        ax.bar([x + 0.2 for x in xs], [l.get("sparsity") or 0 for l in rows], 0.4, label="sparsity", color="tab:orange")
    ax.set_xticks(list(xs), [str(l.get("name")) for l in rows], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title("per-layer kept width / sparsity")
    return _png(fig)


def plot_configs(configs: list[dict]) -> str | None:
    pts = [c for c in configs if isinstance(c, dict) and c.get("latency_ms") is not None and c.get("accuracy") is not None]
    if not pts:
        return None
    fig, ax = _figure()
    ax.scatter([c["latency_ms"] for c in pts], [c["accuracy"] for c in pts], color="tab:blue", label="configuration tried")
    chosen = [c for c in pts if c.get("selected")]
    if chosen:
        ax.scatter([c["latency_ms"] for c in chosen], [c["accuracy"] for c in chosen], s=160, facecolors="none",
                   edgecolors="tab:red", lw=2, label="selected")
    for c in pts:
        ax.annotate(str(c.get("name", "")), (c["latency_ms"], c["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy vs latency of every configuration")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def plot_predicted(pairs: list[dict]) -> str | None:
    pts = [p for p in pairs if isinstance(p, dict) and p.get("predicted_ms") is not None and p.get("measured_ms") is not None]
    if not pts:
        return None
    fig, ax = _figure()
    xs, ys = [p["predicted_ms"] for p in pts], [p["measured_ms"] for p in pts]
    hi = max(xs + ys) * 1.1
    ax.plot([0, hi], [0, hi], "--", color="0.6", label="measured = predicted")
    ax.scatter(xs, ys, color="tab:green")
    for p in pts:
        ax.annotate(str(p.get("name", "")), (p["predicted_ms"], p["measured_ms"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("measured latency (ms)")
    ax.set_title("predicted vs measured latency")
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_device_layers(layers: list[dict], where: str, top: int = 15) -> str | None:
    rows = sorted((l for l in layers if isinstance(l, dict) and l.get("time_ms") is not None), key=lambda l: -l["time_ms"])[:top]
    if not rows:
        return None
    fig, ax = _figure(max(2.2, 0.3 * len(rows) + 1))
    ax.barh(range(len(rows)), [l["time_ms"] for l in rows], color="tab:purple")
    ax.set_yticks(range(len(rows)), [f"{l['name']} ({l.get('op_type', '')})" for l in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean time per run (ms)")
    ax.set_title(f"slowest layers measured on {where}")
    return _png(fig)


# -- rendering ---------------------------------------------------------------------------------
_HEAD = ["model", "backend", "where", "batch", "p50 ms", "p95 ms", "p99 ms", "mean ± std ms", "inf/s", "speedup vs first",
         "accelerated", "self-check"]


def _cells(row: dict) -> list[str]:
    r, st = row["r"], row["r"].stats
    return [r.name, r.backend, row["where"], str(r.batch), f"{st.p50:.3f}", f"{st.p95:.3f}", f"{st.p99:.3f}",
            f"{st.mean:.3f} ± {st.std:.3f}", f"{r.throughput:.1f}", row["speedup"], row["accelerated"], row["check"]]


def _env_lines(doc: dict, devices: list[dict]) -> list[str]:
    from edgeprune.report.tables import environment_line

    out = []
    env = doc.get("env") or next((r.get("env") for r in doc.get("results") or [] if r.get("env")), None)
    if env:
        out.append("host: " + environment_line(env))
    for d in devices:
        if d.get("env"):
            where = _where(d)
            out.append(f"{where}: " + environment_line(d["env"]))
    return out


def render(doc: dict, devices: list[dict]) -> tuple[str, str]:
    """(html, markdown) for a report doc and device result docs."""
    rows = _rows(doc, devices)
    title = f"edgeprune report: {doc.get('model') or (rows[0]['r'].name if rows else 'model')}"
    meta = ", ".join(f"{k} {doc[k]}" for k in ("profile", "precision") if doc.get(k))
    envs = _env_lines(doc, devices)
    plots: list[tuple[str, str | None]] = []
    note = ""
    try:
        import matplotlib  # noqa: F401

        if rows:
            plots.append(("latency distribution", plot_latency(rows)))
        plots += [("per-layer kept width / sparsity", plot_layers(doc.get("layers") or [])),
                  ("accuracy vs latency", plot_configs(doc.get("configs") or [])),
                  ("predicted vs measured latency", plot_predicted(doc.get("predicted_vs_measured") or []))]
        for d in devices:
            where = _where(d)
            plots.append((f"device layers: {where}", plot_device_layers(d.get("layers") or [], where)))
    except ImportError:
        note = "plots need matplotlib: pip install matplotlib"
    e = html.escape
    table = ["<table id='summary'><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in _HEAD) + "</tr></thead><tbody>"]
    for row in rows:
        cls = {"yes": "yes", "baseline": ""}.get(row["accelerated"], "no" if row["accelerated"] else "")
        table.append("<tr>" + "".join(f"<td class='{cls if h == 'accelerated' else ''}'>{e(c)}</td>" for h, c in zip(_HEAD, _cells(row))) + "</tr>")
    table.append("</tbody></table>")
    figs = [f"<figure><img alt='{e(name)}' src='data:image/png;base64,{png}'><figcaption>{e(name)}</figcaption></figure>"
            for name, png in plots if png]
    checks = [f"<li>{e(_where(d))}, {e(str(o.get('name')))}: max abs diff {o.get('max_abs_diff', float('nan')):.3g} (tol {o.get('tolerance', float('nan')):.3g}), "
              f"cosine {o.get('cosine', float('nan')):.6f}, {'ok' if o.get('ok') else 'FAILED'}</li>"
              for d in devices for o in (d.get("check") or {}).get("outputs", [])]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title><style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} h1{{font-size:22px;margin:0 0 4px}}
.env{{color:#555;font-size:13px;margin:2px 0}} table{{border-collapse:collapse;font-size:13px;margin:12px 0}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:right}} th:nth-child(-n+3),td:nth-child(-n+3){{text-align:left}}
th{{background:#f3f3f3}} td.yes{{background:#d9f2d9;font-weight:600}} td.no{{background:#f8dcdc;font-weight:600}}
figure{{margin:16px 0}} img{{max-width:100%}} figcaption{{color:#555;font-size:12px}}</style></head><body>
<h1>{e(title)}</h1><p class="env">{e(meta)}</p>{''.join(f'<p class="env">{e(l)}</p>' for l in envs)}
{''.join(table)}{f'<p>{e(note)}</p>' if note else ''}
{'<h2>Device self-check</h2><ul>' + ''.join(checks) + '</ul>' if checks else ''}
{_recovery_html(doc)}{''.join(figs)}</body></html>
"""
    return page, _markdown(title, meta, envs, rows, doc, devices)


def _recovery_rows(doc: dict) -> list[list[str]]:
    """[stage, held-out score, minutes, steps, note] of the returned attempt's recovery (report.json "recovery")."""
    rec = doc.get("recovery") if isinstance(doc.get("recovery"), dict) else None
    stages = [s for s in (rec or {}).get("stages") or [] if isinstance(s, dict)]
    return [[str(s.get("stage")), f"{s['score']:.2f}" if isinstance(s.get("score"), (int, float)) else "-",
             f"{float(s.get('seconds') or 0) / 60:.2f}", str(s.get("steps") or 0), str(s.get("note") or "")] for s in stages]


_RECOVERY_HEAD = ["stage", "held-out score", "minutes", "steps", "note"]


def _recovery_html(doc: dict) -> str:
    rows = _recovery_rows(doc)
    if not rows:
        return ""
    e = html.escape
    head = f"<h2>Recovery ({e(str(doc.get('metric', 'score')))} on held-out data, dense {doc.get('score_dense', float('nan')):.2f})</h2>"
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (head + "<table id='recovery'><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in _RECOVERY_HEAD)
            + f"</tr></thead><tbody>{body}</tbody></table>")


def _md_table(head: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]


def _markdown(title: str, meta: str, envs: list[str], rows: list[dict], doc: dict, devices: list[dict]) -> str:
    out = [f"# {title}", ""] + ([meta, ""] if meta else []) + [f"- {l}" for l in envs] + [""]
    out += _md_table(_HEAD, [_cells(r) for r in rows]) + [""]
    configs = [c for c in doc.get("configs") or [] if isinstance(c, dict)]
    if configs:
        out += ["## Configurations tried", ""] + _md_table(["name", "accuracy", "latency ms", "selected"], [
            [str(c.get("name")), str(c.get("accuracy")), str(c.get("latency_ms")), "yes" if c.get("selected") else ""] for c in configs]) + [""]
    if _recovery_rows(doc):
        out += [f"## Recovery ({doc.get('metric', 'score')} on held-out data)", ""] + _md_table(_RECOVERY_HEAD, _recovery_rows(doc)) + [""]
    for d in devices:
        where = _where(d)
        layers = sorted((l for l in d.get("layers") or [] if l.get("time_ms") is not None), key=lambda l: -l["time_ms"])[:20]
        if layers:
            out += [f"## Slowest layers on {where}", ""] + _md_table(["layer", "op", "exec type", "ms"], [
                [str(l["name"]), str(l.get("op_type", "")), str(l.get("exec_type", "")), f"{l['time_ms']:.4f}"] for l in layers]) + [""]
    return "\n".join(out) + "\n"


def write_report(source: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write report.html and report.md (atomically) for OUTDIR or one JSON file; returns their paths."""
    from edgeprune._io import write_text_atomic

    doc, devices, folder = collect(source)
    page, md = render(doc, devices)
    out = Path(out_dir) if out_dir else folder
    return write_text_atomic(out / "report.html", page), write_text_atomic(out / "report.md", md)
