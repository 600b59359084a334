"""Sparsity benchmark (issue #5): magnitude / Wanda / SparseGPT, uniform vs learned allocation, measured latency.

    python benchmarks/sparsity.py [--only minilm|decoder|latency ...] [--quick]
        -> benchmarks/results/sparsity.md and .json   (--quick: benchmarks/.cache/quick-results/, never committed)

Sections (each selectable; a run MERGES its sections into the existing results, so the accuracy sections and
the latency section can be measured at different times and on different machines; each section records its
own machine and date):
  minilm   MiniLM-L6 (zoo.minilm): embedding cosine to the dense model on the 1000 held-out Rotten Tomatoes
           snippets of zoo.probe_split, and a logistic probe (train 2000 / test 1000) on the sparse embeddings.
  decoder  The GPT-2-style decoder of structured.py (zoo.trained_tiny_gpt2, same weights): val perplexity.
  latency  Dense vs 2:4 MiniLM on ONNX Runtime and OpenVINO CPU with the per-runtime "accelerated" verdict;
           timing-sensitive: run it on a quiet machine.
Grid: {2:4, unstructured 50%, 70%} x {magnitude, wanda, sparsegpt} x {uniform, learned}; learned only where the
pattern allows a per-layer ratio. The H100 2:4 GEMM numbers come from gpu_semi_structured.json (measured there).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import zoo  # noqa: E402
from benchmarks.sparsity_md import markdown  # noqa: E402

RESULTS = zoo.RESULTS
QUICK_RESULTS = zoo.CACHE / "quick-results"  # quick runs never overwrite committed numbers
GRID = [("2:4", None), ("unstructured", 0.5), ("unstructured", 0.7)]
METHODS = ("magnitude", "wanda", "sparsegpt")
NAMES = ["input_ids", "attention_mask", "token_type_ids"]
SECTIONS = ["minilm", "decoder", "latency"]
NO_LEARNED_NM = "n/a: fixed 50% per group"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the grid ---------------------------------------------------------------------------------------------

# Learned allocation: 100 Adam steps on 8 calibration samples (library default 300 / 16). Each step is a forward and
# backward of the whole model; on the shared 2-core host the default would cost ~10 min per MiniLM cell.
ALLOC_STEPS, ALLOC_SAMPLES = 100, 8


def grid(quick: bool, ignore: tuple[str, ...]):
    """(pattern label, method, allocation, SparsityConfig or None); None = learned 2:4, which cannot exist."""
    from edgeprune.sparsity import SparsityConfig

    out = []
    for pattern, sparsity in GRID:
        label = pattern if sparsity is None else f"unstructured {sparsity:.0%}"
        for method in METHODS:
            for allocation in ("uniform", "learned"):
                cfg = None if pattern == "2:4" and allocation == "learned" else SparsityConfig(
                    pattern=pattern, sparsity=sparsity, method=method, allocation=allocation, ignore=ignore,
                    allocation_steps=20 if quick else ALLOC_STEPS,
                    allocation_samples=ALLOC_SAMPLES)
                out.append((label, method, allocation, cfg))
    return out


def run_grid(model, calib, quick, ignore, evaluate, section: dict, save, done: dict | None = None):
    """Sparsify `model` for every grid cell, score it with evaluate(sparse) -> dict, append a row, save.
    `done`: rows of an earlier run with the same settings, keyed (pattern, method, allocation): reused, not re-run."""
    import edgeprune as ep

    for label, method, allocation, cfg in grid(quick, ignore):
        row = {"pattern": label, "method": method, "allocation": allocation}
        if (label, method, allocation) in (done or {}):
            row = done[(label, method, allocation)]
        elif cfg is None:
            row["note"] = NO_LEARNED_NM
        else:
            t0 = time.perf_counter()
            sparse, report = ep.sparsify(model, None, cfg, calib=calib, return_report=True)
            row.update(seconds=round(time.perf_counter() - t0, 1), global_sparsity=round(report.global_sparsity, 5),
                       pattern_ok=report.pattern_ok, calibration_samples=report.calibration_samples)
            if report.allocation:
                a = report.allocation
                row["allocation_result"] = {"target": a["target"], "achieved": round(a["achieved"], 5),
                                            "seconds": round(a["seconds"], 1), "recon_loss_start": a["loss_start"],
                                            "recon_loss_end": a["loss_end"]}
            row["per_layer_sparsity"] = {l.name: round(l.sparsity, 3) for l in report.sparsified}
            row.update(evaluate(sparse))
        section["rows"].append(row)
        log(json.dumps({k: v for k, v in row.items() if k != "per_layer_sparsity"}))
        save()


# -- MiniLM-L6 ------------------------------------------------------------------------------------------------

def finished_cells(out: Path, name: str, section: dict) -> dict:
    """--resume: the scored rows of `name` in the existing results, if that run used the same settings."""
    old = load_sections(out).get(name)
    same = ("probe_train", "probe_test", "calibration_samples", "dense_probe_accuracy", "dense_perplexity", "val_blocks")
    if not old or any(old.get(k) != section.get(k) for k in same):
        return {}
    learned_same = all(old["measured"].get(k) == section["measured"][k] for k in ("allocation_steps", "allocation_loss"))
    return {(r["pattern"], r["method"], r["allocation"]): {**r, "measured_in": old["measured"]["date_utc"]}
            for r in old["rows"] if ("embedding_cosine" in r or "perplexity" in r or "note" in r)
            and (r["allocation"] == "uniform" or learned_same)}


def run_minilm(doc, save, quick, resume_from=None):
    model, tok = zoo.minilm()
    tr_x, tr_y, te_x, te_y = zoo.probe_split(*((200, 100) if quick else (2000, 1000)))
    n_cal = 16 if quick else 128
    texts = zoo.rotten_tomatoes()[0]
    # calibration snippets 4000.. are disjoint from the probe split (the first 3000); 64 tokens covers ~all of them
    enc = zoo.minilm_inputs(texts[4000:4000 + n_cal], seq_len=64)
    calib = tuple(enc[n] for n in NAMES)

    def embeddings(m):
        return embed_sorted(m, tok, tr_x), embed_sorted(m, tok, te_x)

    d_tr, d_te = embeddings(model)
    dense_acc = zoo.probe_accuracy(d_tr, tr_y, d_te, te_y)

    def evaluate(sparse):
        e_tr, e_te = embeddings(sparse)
        return {"embedding_cosine": round(float(np.mean(np.sum(e_te * d_te, axis=1))), 4),  # L2-normalised
                "probe_accuracy": round(zoo.probe_accuracy(e_tr, tr_y, e_te, te_y), 4)}

    section = doc["minilm"] = {
        "model": "all-MiniLM-L6-v2 (zoo.minilm)", "data": "Rotten Tomatoes (zoo.probe_split)",
        "probe_train": len(tr_x), "probe_test": len(te_x), "calibration_samples": n_cal, "calibration_seq_len": 64,
        "eval_seq_len": 128, "dense_probe_accuracy": round(dense_acc, 4), "ignore": ["*pooler*"],
        "measured": measured(quick), "rows": []}
    log(f"minilm dense probe accuracy {dense_acc:.4f}")
    done = finished_cells(resume_from, "minilm", section) if resume_from else {}
    log(f"reusing {len(done)} finished cells")
    run_grid(model, calib, quick, ("*pooler*",), evaluate, section, save, done)


def embed_sorted(model, tok, texts, seq_len=128):
    """zoo.embed on length-sorted texts, returned in the original order: batches pad to similar lengths,
    about half the tokens of random batches (padding is masked out, so the embeddings are the same)."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    emb = zoo.embed(model, tok, [texts[i] for i in order], seq_len=seq_len)
    out = np.empty_like(emb)
    out[order] = emb
    return out


# -- GPT-2-style decoder --------------------------------------------------------------------------------------

@torch.no_grad()
def perplexity(model, blocks, batch=16) -> float:
    """exp(mean next-token cross-entropy) over all positions of the blocks: structured.py's definition."""
    total, n = 0.0, 0
    for i in range(0, len(blocks), batch):
        ids = blocks[i:i + batch]
        logits = model(input_ids=ids, use_cache=False).logits
        total += float(torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                         ids[:, 1:].reshape(-1), reduction="sum"))
        n += ids[:, 1:].numel()
    return math.exp(total / n)


def run_decoder(doc, save, quick, resume_from=None):
    steps = 20 if quick else 200  # structured.py's --train-steps default: the same cached weights
    model = zoo.trained_tiny_gpt2(steps)
    train, val = zoo.lm_blocks(seq_len=zoo.GPT2_SMALL["n_positions"])
    val = val[:50 if quick else 200]
    calib = train[-(32 if quick else 128):]  # structured.py's calibration blocks
    dense = perplexity(model, val)
    section = doc["decoder"] = {
        "model": f"zoo.trained_tiny_gpt2({steps}): GPT-2 {zoo.GPT2_SMALL}, trained {steps} steps on Rotten Tomatoes "
                 "text (the decoder of structured.py)", "val_blocks": len(val), "seq_len": val.shape[1],
        "calibration_samples": len(calib), "dense_perplexity": round(dense, 3),
        # lm_head shares its weight with the token embedding: sparsifying it would also zero embeddings
        "ignore": ["lm_head"], "measured": measured(quick), "rows": []}
    log(f"decoder dense perplexity {dense:.2f}")
    done = finished_cells(resume_from, "decoder", section) if resume_from else {}
    run_grid(model, (calib,), quick, ("lm_head",), lambda m: {"perplexity": round(perplexity(m, val), 3)}, section, save,
             done)


# -- latency (timing-sensitive: run on a quiet machine) -------------------------------------------------------

def run_latency(doc, save, quick, resume_from=None):
    """Dense vs 2:4 MiniLM on ORT and OpenVINO CPU; the verdict column comes from the report, evidence from OV counters."""
    import edgeprune as ep
    from edgeprune.backends import BackendOptions
    from edgeprune.exporter import export
    from edgeprune.models import HFModelWrapper
    from edgeprune.sparsity import SparsityConfig

    dense = HFModelWrapper(zoo.minilm()[0], NAMES).eval()
    enc = zoo.minilm_inputs(zoo.rotten_tomatoes()[0][:1], seq_len=128)
    example = tuple(enc[n] for n in NAMES)
    sparse, report = ep.sparsify(dense, example, SparsityConfig(pattern="2:4", method="magnitude", ignore=("*pooler*",)),
                                 return_report=True)
    report.assess(precision="fp32", sparse_rate=0.4)
    summary = report.summary()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, module in (("dense", dense), ("2:4", sparse)):
            paths[name] = Path(tmp) / f"{name.replace(':', '_')}.onnx"
            export(module, example, paths[name], input_names=NAMES)
        for backend_name, options in (("onnxruntime", BackendOptions(threads=2)),
                                      ("openvino", BackendOptions(threads=2, sparse_weights=True, extra={"sparse_rate": 0.4}))):
            rows += _latency_pair(backend_name, options, paths, summary, 3 if quick else 5, 30 if quick else 100)
            log(json.dumps(rows[-1]))
    doc["latency"] = {"seq_len": 128, "batch": 1, "threads": 2, "rows": rows, "measured": measured(quick),
                      "torch_cuda_and_tensorrt": {k: summary[k] for k in ("torch-cuda", "tensorrt")}}
    save()


def _latency_pair(backend_name, options, paths, summary, rounds, iters) -> list[dict]:
    """Dense and 2:4 on one runtime in interleaved rounds; speedup = median of per-round p50 ratios (min-max)."""
    from edgeprune.backends import get_backend
    from edgeprune.measurement.bench import benchmark_sessions, compare

    sessions = []
    for name, path in paths.items():
        sess = get_backend(backend_name, options).compile(path)
        sessions.append((name, sess, sess.prepare_inputs(None)))
    results = benchmark_sessions(sessions, warmup=10, iters=iters, rounds=rounds)
    speed = [None] + compare(results)
    rows = []
    for (name, sess, feeds), res, sp in zip(sessions, results, speed):
        row = {"model": name, "runtime": backend_name, "p50_ms": round(res.stats.p50, 3), "p90_ms": round(res.stats.p90, 3),
               "speedup_vs_dense": 1.0 if sp is None else round(sp.median, 3),
               "speedup_min": None if sp is None else round(sp.min, 3), "speedup_max": None if sp is None else round(sp.max, 3)}
        if name == "2:4":
            s = summary[backend_name]
            row["accelerated"] = f"{'/'.join(s['verdicts'])}: {s['main_reason']}"
            if backend_name == "openvino":  # measured evidence: which kernels OpenVINO actually ran
                fc = [l for l in sess.inspect(feeds, runs=3) if l.op_type in ("FullyConnected", "MatMul")]
                row["evidence"] = (f"{sum(1 for l in fc if l.sparse)} of {len(fc)} FullyConnected/MatMul layers ran a sparse "
                                   f"kernel; exec types: {sorted({l.exec_type for l in fc})}")
        rows.append(row)
    return rows


# -- results: merge sections into the existing file -----------------------------------------------------------

def measured(quick: bool) -> dict:
    info = zoo.machine_info()
    return {"date_utc": info["date_utc"], "quick": quick, "load_avg_1min_at_start": round(os.getloadavg()[0], 1),
            "allocation_steps": 20 if quick else ALLOC_STEPS, "allocation_samples": ALLOC_SAMPLES,
            # learned rows before commit b66369e reconstructed the block average; --resume re-runs those
            "allocation_loss": "model output", "cpu": info["cpu"], "cores_usable": info["cores_usable"],
            "torch_threads": torch.get_num_threads(), "command": " ".join(sys.argv[1:]) or "(all sections)"}


def load_sections(out: Path) -> dict:
    """Sections of an earlier run in the current format (older fallback-data files are dropped)."""
    path = out / "sparsity.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    rows = old.get("rows")
    return {k: v for k, v in rows.items() if k in SECTIONS} if isinstance(rows, dict) else {}


def gpu_numbers() -> dict | None:
    """The H100 2:4 GEMM measurements (benchmarks/gpu_semi_structured.py), to show next to the CPU numbers."""
    path = RESULTS / "gpu_semi_structured.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small settings (smoke run), written under benchmarks/.cache")
    parser.add_argument("--only", choices=SECTIONS, action="append")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 for accuracy runs on a busy host)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    parser.add_argument("--merge-from", type=Path, metavar="DIR",
                        help="run nothing: copy the sections of DIR/sparsity.json into the results and re-render the md")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the cells already scored in the results (same settings); run only the missing ones")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    doc: dict = {}

    def save():
        # Re-read and replace only this run's sections: another section may be running in parallel.
        merged = {**load_sections(out), **doc}
        zoo.write_results("sparsity", merged, markdown(merged, gpu_numbers()), {"sections": sorted(merged)},
                          results_dir=out)

    if args.merge_from:
        doc.update(load_sections(args.merge_from))
        save()
        return
    runs = {"minilm": run_minilm, "decoder": run_decoder, "latency": run_latency}
    for name in args.only or SECTIONS:
        log(f"section {name}")
        runs[name](doc, save, args.quick, out if args.resume else None)
    save()


if __name__ == "__main__":
    main()
