"""Markdown for benchmarks/results/sparsity.md (kept apart from sparsity.py so each file stays small)."""
from __future__ import annotations

GRID_CELLS = 18  # 3 patterns x 3 methods x {uniform, learned} (learned 2:4 rows say n/a)


def _spread(r) -> str:
    return f" ({r['speedup_min']}-{r['speedup_max']})" if r.get("speedup_min") is not None else ""


def markdown(doc: dict, gpu: dict | None) -> str:
    lines = ["# Sparsity: magnitude / Wanda / SparseGPT, uniform vs learned allocation, measured latency", "",
             "No finetuning anywhere. Each section below was measured separately (date, machine and command in its "
             "header); `python benchmarks/sparsity.py --only SECTION` refreshes one section and keeps the others."]
    for key, render in (("minilm", _minilm), ("decoder", _decoder), ("latency", _latency)):
        if key in doc:
            lines += [""] + render(doc[key])
        else:
            lines += ["", f"## {key}: not measured yet (`python benchmarks/sparsity.py --only {key}`)"]
    if gpu:
        lines += [""] + _gpu(gpu)
    return "\n".join(lines) + "\n"


def _when(sec: dict) -> str:
    m = sec.get("measured", {})
    quick = " **QUICK (smoke) settings**" if m.get("quick") else ""
    return (f"Measured {m.get('date_utc')} on {m.get('cpu')} ({m.get('cores_usable')} cores, torch threads "
            f"{m.get('torch_threads')}, 1-min load average {m.get('load_avg_1min_at_start')} at the start: a shared "
            f"host, so the seconds columns are wall time under that load), `sparsity.py {m.get('command')}`{quick}. "
            f"Learned allocation: {m.get('allocation_steps')} steps on {m.get('allocation_samples')} calibration samples.")


def _carried(sec: dict) -> list[str]:
    """--resume: cells reused from an earlier run with the same settings, and when that run was."""
    dates = sorted({r["measured_in"] for r in sec["rows"] if "measured_in" in r and "note" not in r})
    n = sum(1 for r in sec["rows"] if "measured_in" in r and "note" not in r)
    return [] if not n else [f"{n} uniform cells were carried over (`--resume`, same settings) from the run of "
                             f"{', '.join(dates)}; the others were measured in this run.", ""]


def _pct(x) -> str:
    return "-" if x is None else f"{x:.2%}"


def _alloc(r: dict) -> str:
    a = r.get("allocation_result")
    return "-" if not a else f"{a['achieved']:.3%} (target {a['target']:.0%}, {a['seconds']} s)"


def _partial(sec: dict) -> list[str]:
    n = len(sec["rows"])
    return [] if n >= GRID_CELLS else [f"**Incomplete: {n} of {GRID_CELLS} grid cells measured** (the run was still "
                                       "going or was stopped); the missing cells are not in the table.", ""]


def _learned_vs_uniform(sec: dict, metric: str, higher_better: bool) -> list[str]:
    """One data-driven line: in how many (pattern, method) cells learned allocation beat uniform on `metric`."""
    rows = {(r["pattern"], r["method"], r["allocation"]): r for r in sec["rows"] if metric in r}
    pairs = [(rows[(p, m, "uniform")][metric], rows[k][metric]) for k in rows if k[2] == "learned"
             for p, m in [k[:2]] if (p, m, "uniform") in rows]
    if not pairs:
        return []
    wins = sum((l > u) if higher_better else (l < u) for u, l in pairs)
    return [f"Learned vs uniform allocation: learned is better on {metric} in {wins} of {len(pairs)} measured cells.", ""]


def _minilm(m: dict) -> list[str]:
    out = [f"## MiniLM-L6 ({m['model']}; {m['data']})", "", _when(m), "", *_carried(m), *_partial(m),
           f"Embedding cosine: mean cosine of the sparse vs dense sentence embeddings on the {m['probe_test']} held-out "
           f"snippets. Probe: logistic regression on frozen embeddings, train {m['probe_train']} / test "
           f"{m['probe_test']}. Calibration: {m['calibration_samples']} other snippets at {m['calibration_seq_len']} "
           f"tokens. Ignored: {', '.join(m['ignore'])}. **Dense probe accuracy: {m['dense_probe_accuracy']:.4f}** "
           "(cosine 1 by definition).", "",
           *_learned_vs_uniform(m, "embedding_cosine", True), *_learned_vs_uniform(m, "probe_accuracy", True),
           "| pattern | method | allocation | global sparsity | embedding cosine | probe accuracy | seconds | learned: achieved global |",
           "|---|---|---|---|---|---|---|---|"]
    for r in m["rows"]:
        if "note" in r:
            out.append(f"| {r['pattern']} | {r['method']} | {r['allocation']} | {r['note']} | | | | |")
            continue
        out.append(f"| {r['pattern']} | {r['method']} | {r['allocation']} | {_pct(r['global_sparsity'])} | "
                   f"{r['embedding_cosine']:.4f} | {r['probe_accuracy']:.4f} | {r['seconds']} | {_alloc(r)} |")
    return out


def _decoder(d: dict) -> list[str]:
    out = [f"## GPT-2-style decoder: {d['model']}", "", _when(d), "", *_carried(d), *_partial(d),
           f"Perplexity on {d['val_blocks']} held-out blocks of {d['seq_len']} tokens; calibration "
           f"{d['calibration_samples']} training blocks; ignored: {', '.join(d['ignore'])} (tied to the embedding). "
           f"**Dense perplexity: {d['dense_perplexity']}**.", "",
           *_learned_vs_uniform(d, "perplexity", False),
           "| pattern | method | allocation | global sparsity | perplexity | seconds | learned: achieved global |",
           "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        if "note" in r:
            out.append(f"| {r['pattern']} | {r['method']} | {r['allocation']} | {r['note']} | | | |")
            continue
        out.append(f"| {r['pattern']} | {r['method']} | {r['allocation']} | {_pct(r['global_sparsity'])} | "
                   f"{r['perplexity']} | {r['seconds']} | {_alloc(r)} |")
    return out


def _latency(lat: dict) -> list[str]:
    out = [f"## Measured CPU latency, MiniLM-L6 batch 1 x {lat['seq_len']} tokens, {lat['threads']} threads", "",
           _when(lat), "",
           "| model | runtime | p50 ms | p90 ms | speedup vs dense (5 interleaved rounds, min-max) | accelerated | evidence |", "|---|---|---|---|---|---|---|"]
    for r in lat["rows"]:
        out.append(f"| {r['model']} | {r['runtime']} | {r['p50_ms']} | {r['p90_ms']} | {r['speedup_vs_dense']}x{_spread(r)} | "
                   f"{r.get('accelerated', '-')} | {r.get('evidence', '-')} |".replace("\n", " "))
    out.append("")
    for k, s in lat["torch_cuda_and_tensorrt"].items():
        out.append(f"- {k} (verdict only, not measured on this CPU host): {s['verdicts']}: {s['main_reason']}")
    return out


def _gpu(gpu: dict) -> list[str]:
    meta = gpu.get("meta", {})
    out = [f"## PyTorch dense vs 2:4 GEMM — measured on the {meta.get('gpu', 'GPU')} (not on this CPU host)", "",
           f"From [gpu_semi_structured.md](gpu_semi_structured.md) (`benchmarks/gpu_semi_structured.py`): torch "
           f"{meta.get('torch')}, CUDA {meta.get('cuda')}, {meta.get('dtype')}, {meta.get('date')}. Speedup = median "
           f"of {meta.get('rounds')} interleaved rounds of dense/2:4 time (min-max); kernel names from torch.profiler.", "",
           "| GEMM | M x K x N | 2:4 library | dense ms | 2:4 ms | speedup (min-max) | dense kernel | 2:4 kernel |",
           "|---|---|---|---|---|---|---|---|"]
    for r in gpu.get("rows", []):
        if "error" in r:
            continue  # the CUTLASS rows: not supported on sm90, listed once below
        out.append(f"| {r['shape']} | {r['M']}x{r['K']}x{r['N']} | {r['library']} | {r['dense_ms']:.4f} | "
                   f"{r['sparse_ms']:.4f} | {r['speedup']:.2f}x ({r['speedup_min']:.2f}-{r['speedup_max']:.2f}) | "
                   f"`{', '.join(r['dense_kernels'])}` | `{', '.join(r['sparse_kernels'])}` |")
    errors = sorted({f"{r['library']}: {r['error']}" for r in gpu.get("rows", []) if "error" in r})
    out += [f"- not run: {e}" for e in errors]
    small = [r["speedup"] for r in gpu.get("rows", []) if "error" not in r and r["shape"].startswith("MiniLM")]
    gains = [r["shape"] for r in gpu.get("rows", []) if "error" not in r and r["speedup"] > 1]
    if small:
        out.append(f"- MiniLM-sized GEMMs run at {min(small):.2f}-{max(small):.2f}x of dense with 2:4 (slower); "
                   f"only {', '.join(gains) or 'none'} gains. So on GPU too a 2:4 MiniLM saves memory, not time.")
    return out
