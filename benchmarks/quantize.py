"""FP32 vs INT8 on ONNX Runtime and OpenVINO: latency (interleaved rounds), agreement and probe accuracy.

    python benchmarks/quantize.py [--quick] [--no-stack] [--no-latency]

--no-latency: accuracy only (no timing rounds), written to results/quantize_accuracy.{md,json}.

Writes benchmarks/results/quantize.md and .json. Models: MiniLM-L6 (seq 128, batch 1) and
EfficientNet-Lite0 (224x224, batch 1). Each is exported once (validated), quantized with edgeprune.quantize
(ORT static QDQ, ORT dynamic for MiniLM, OpenVINO NNCF PTQ), then every artifact is timed in the same
interleaved rounds; speedup = median of per-round p50 ratios INT8 vs FP32 on the same runtime (min-max).
Accuracy: MiniLM — cosine of mean-pooled embeddings vs FP32, and a logistic-regression probe trained on
FP32 embeddings and applied unchanged to each variant (Rotten Tomatoes when benchmarks/zoo.py provides it);
EfficientNet — top-1 agreement and logit cosine vs FP32 on held-out photos. Calibration and evaluation
samples are disjoint. With edgeprune.pruning present, MiniLM is also pruned (FFN 30 %) with the same
calibration data and quantized on top ("stacked").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import zoo  # noqa: E402  (real models and data sets)

from edgeprune.backends import BackendOptions, get_backend  # noqa: E402
from edgeprune.measurement.bench import benchmark_sessions, speedup  # noqa: E402
from edgeprune.data import CalibrationData  # noqa: E402
from edgeprune.exporter import export  # noqa: E402
from edgeprune.models import LoadedModel, builtin_path, load_model  # noqa: E402
from edgeprune.quantize import quantize  # noqa: E402
from edgeprune.quantize.ort import OrtQuantConfig  # noqa: E402

SEQ = 128


# -- data ----------------------------------------------------------------------------------

def texts_and_labels():
    texts, labels = zoo.rotten_tomatoes()
    return list(texts), [int(v) for v in labels], "Rotten Tomatoes (benchmarks/zoo.py)"


def photos(n: int) -> tuple[torch.Tensor, str]:
    """n distinct 224x224 inputs: random resized crops (scale 0.35-1) and flips of the shipped photos."""
    return (zoo.photo_views(n),
            f"benchmarks/zoo.py imagenet_photos: {len(zoo.imagenet_photo_names())} photos, {n} random resized crops/flips")


def efficientnet():
    return zoo.efficientnet_lite0().eval()


# -- measuring -----------------------------------------------------------------------------

def outputs(path: Path, runtime: str, feeds: list[dict]) -> np.ndarray:
    sess = get_backend(runtime, BackendOptions(precision="fp32")).compile(path)
    return np.concatenate([sess.run(sess.prepare_inputs(f))[0] for f in feeds])


def pooled(hidden: np.ndarray, masks: np.ndarray) -> np.ndarray:
    m = masks[..., None].astype(np.float32)
    return (hidden * m).sum(1) / np.maximum(m.sum(1), 1)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)))


def variants(name, module, example, names, calib, tmp: Path, dynamic: bool):
    """[(label, runtime, path, precision, quantize details)] for one model."""
    loaded = LoadedModel(name, "module", module, example, names)
    fp32 = tmp / f"{name}_fp32.onnx"
    export(loaded, None, fp32)
    out = [("ORT fp32", "onnxruntime", fp32, "fp32", {}), ("OV fp32", "openvino", fp32, "fp32", {})]
    t0 = time.time()
    r = quantize(fp32, "onnxruntime", calib, "int8", tmp / f"{name}_ort_int8.onnx", validate=False)
    out.append(("ORT int8 static QDQ", "onnxruntime", r.path, "int8", dict(r.details, seconds=round(time.time() - t0, 1))))
    if dynamic:
        r = quantize(fp32, "onnxruntime", None, "int8", tmp / f"{name}_ort_dyn.onnx", config=OrtQuantConfig(mode="dynamic"), validate=False)
        out.append(("ORT int8 dynamic", "onnxruntime", r.path, "int8", r.details))
    t0 = time.time()
    r = quantize(fp32, "openvino", calib, "int8", tmp / f"{name}_ov_int8.xml", validate=False)
    out.append(("OV int8 NNCF", "openvino", r.path, "int8", dict(r.details, seconds=round(time.time() - t0, 1))))
    return out


def time_all(vs, feed, iters, rounds):
    if rounds == 0:  # --no-latency: accuracy rows only
        return [{"variant": label, "runtime": runtime, "precision": precision, "p50_ms": None, "p90_ms": None,
                 "speedup_vs_fp32_same_runtime": None, "artifact_mb": _size_mb(path), "quantize": details}
                for label, runtime, path, precision, details in vs]
    sessions = []
    for label, runtime, path, precision, _ in vs:
        sess = get_backend(runtime, BackendOptions(precision="fp32" if precision == "fp32" else "int8")).compile(path)
        sessions.append((label, sess, sess.prepare_inputs(feed)))
    results = benchmark_sessions(sessions, batch=1, warmup=10, iters=iters, rounds=rounds)
    by = {r.name: r for r in results}
    rows = []
    for (label, runtime, path, precision, details), res in zip(vs, results):
        # INT8 (and stacked) variants are compared with the unpruned FP32 model on the same runtime.
        base = by["ORT fp32" if runtime == "onnxruntime" else "OV fp32"]
        s = speedup(base, res)
        rows.append({"variant": label, "runtime": runtime, "precision": precision, "p50_ms": res.stats.p50, "p90_ms": res.stats.p90,
                     "mean_ms": res.stats.mean, "std_ms": res.stats.std, "n": res.stats.n,
                     "speedup_vs_fp32_same_runtime": {"median": s.median, "min": s.min, "max": s.max},
                     "artifact_mb": (res.artifact_bytes or 0) / 1e6, "quantize": details})
    return rows


def _size_mb(path: Path) -> float:
    path = Path(path)
    return (path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)) / 1e6


def minilm_bench(args, tmp: Path):
    texts, labels, source = texts_and_labels()
    loaded = load_model("minilm", seq_len=SEQ)
    from edgeprune.data import load_tokenizer

    tokenizer = load_tokenizer(builtin_path("minilm"))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    n_cal, n_tr, n_te = 128, (200 if args.quick else 600), (100 if args.quick else 400)
    cal_idx, tr_idx, te_idx = order[:n_cal], order[n_cal:n_cal + n_tr], order[n_cal + n_tr:n_cal + n_tr + n_te]

    def enc(idx):
        e = tokenizer([texts[i] for i in idx], padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
        return {k: np.asarray(e[k], np.int64) for k in loaded.input_names}

    calib = CalibrationData(enc(cal_idx), source=f"{source} ({n_cal} calibration lines)")
    ev_tr, ev_te = CalibrationData(enc(tr_idx)), CalibrationData(enc(te_idx))
    example = tuple(torch.from_numpy(calib.arrays[n][:1]) for n in loaded.input_names)
    vs = variants("minilm", loaded.module, example, loaded.input_names, calib, tmp, dynamic=True)
    stacked_note = None
    if not args.no_stack:
        try:
            from edgeprune.pruning import StructuredConfig, prune

            t0 = time.time()
            pruned = prune(loaded.module, example, StructuredConfig(ratio=0.3, unit="ffn"), calib=calib.head(64))
            sv = variants("minilm_pruned", pruned, example, loaded.input_names, calib, tmp, dynamic=False)
            vs += [(f"stacked FFN-30% + {lab}", rt, p, pr, d) for lab, rt, p, pr, d in sv if lab in ("ORT fp32", "OV fp32", "ORT int8 static QDQ", "OV int8 NNCF")]
            stacked_note = f"pruned FFN 30 % with least-squares compensation in {time.time() - t0:.0f} s on the same calibration data"
        except Exception as err:  # pruning is another module's work: report, don't fail the benchmark
            stacked_note = f"stacking skipped: {type(err).__name__}: {err}"
    print(f"[quantize] minilm: {len(vs)} variants; {stacked_note}", flush=True)
    feeds_tr, feeds_te = ev_tr.feeds(batch_size=1), ev_te.feeds(batch_size=1)
    masks_tr, masks_te = ev_tr.arrays["attention_mask"], ev_te.arrays["attention_mask"]
    emb = {}
    for label, runtime, path, _, _ in vs:
        emb[label] = (pooled(outputs(path, runtime, feeds_tr), masks_tr), pooled(outputs(path, runtime, feeds_te), masks_te))
    acc = {}
    if labels is not None:
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(labels)
        probe = LogisticRegression(max_iter=2000, C=1.0).fit(emb["ORT fp32"][0], y[tr_idx])
        acc = {lab: float(probe.score(e[1], y[te_idx])) for lab, e in emb.items()}
    rows = time_all(vs, feeds_te[0], args.iters, args.rounds)
    for r in rows:
        r["cosine_vs_fp32"] = cosine_rows(emb[r["variant"]][1], emb["ORT fp32"][1])
        r["probe_accuracy"] = acc.get(r["variant"])
    return {"model": "MiniLM-L6 (seq 128, batch 1)", "data": source, "eval_samples": int(n_te), "stacked": stacked_note, "rows": rows}


def effnet_bench(args, tmp: Path):
    n_cal, n_ev = 128, (64 if args.quick else 200)
    imgs, source = photos(n_cal + n_ev)
    calib = CalibrationData({"image": imgs[:n_cal].numpy()}, source=f"{source} (first {n_cal})")
    ev = CalibrationData({"image": imgs[n_cal:].numpy()})
    model = efficientnet()
    vs = variants("effnet", model, (imgs[:1],), ["image"], calib, tmp, dynamic=False)
    feeds = ev.feeds(batch_size=1)
    logits = {label: outputs(path, runtime, feeds) for label, runtime, path, _, _ in vs}
    rows = time_all(vs, feeds[0], args.iters, args.rounds)
    ref = logits["ORT fp32"]
    for r in rows:
        got = logits[r["variant"]]
        r["top1_agreement"] = float(np.mean(got.argmax(1) == ref.argmax(1)))
        r["cosine_vs_fp32"] = cosine_rows(got, ref)
    return {"model": "EfficientNet-Lite0 (224, batch 1)", "data": source, "eval_samples": int(len(ev)), "rows": rows}


def _settings(details: dict) -> str:
    """What the quantizer chose, as the table shows it: ORT's activation/weight types (U8S8 vs U8U8 is a 7x
    difference on AVX2 CPUs without VNNI), OpenVINO's preset; '-' for fp32."""
    if "weight_type" in details:
        rr = ", reduce_range" if details.get("reduce_range") else ""
        return f"{details.get('mode', '?')}: activations uint8, weights {details['weight_type'] or 'int8'}{rr}"
    return details.get("preset") or details.get("mode") or "-"


def markdown(results, meta) -> str:
    lines = ["# INT8 vs FP32 on ONNX Runtime and OpenVINO (CPU)", "",
             f"Machine: {meta['cpu']}; {meta['rounds']} interleaved rounds × {meta['iters']} iters per variant, batch 1. "
             "Speedup = median of per-round p50 ratios FP32/INT8 on the same runtime (min-max over rounds).", ""]
    for res in results:
        lines += [f"## {res['model']}", "", f"Data: {res['data']}; {res['eval_samples']} held-out evaluation samples "
                  "(calibration samples are disjoint)." + (f" Stacking: {res['stacked']}." if res.get("stacked") else ""), ""]
        acc_col = "probe acc" if "probe_accuracy" in res["rows"][0] else "top-1 agree"
        lines += [f"| variant | settings | p50 ms | p90 ms | speedup vs fp32 (same runtime) | cosine vs fp32 | {acc_col} | MB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in res["rows"]:
            s = r["speedup_vs_fp32_same_runtime"]
            acc = r.get("probe_accuracy", r.get("top1_agreement"))
            settings = _settings(r.get("quantize") or {})
            if s is None:  # --no-latency
                lines.append(f"| {r['variant']} | {settings} | - | - | not timed | {r['cosine_vs_fp32']:.4f} | "
                             f"{'n/a' if acc is None else f'{100 * acc:.1f}%'} | {r['artifact_mb']:.1f} |")
                continue
            lines.append(f"| {r['variant']} | {settings} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f}) | "
                         f"{r['cosine_vs_fp32']:.4f} | {'n/a' if acc is None else f'{100 * acc:.1f}%'} | {r['artifact_mb']:.1f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-stack", action="store_true", help="skip pruning + INT8")
    ap.add_argument("--only", choices=["minilm", "effnet"])
    ap.add_argument("--no-latency", action="store_true", help="accuracy only, no timing (results/quantize_accuracy.*)")
    args = ap.parse_args(argv)
    args.iters, args.rounds = (20, 2) if args.quick else (100, 5)
    if args.no_latency:
        args.rounds = 0
    from edgeprune.env import environment

    env = environment()
    flags = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags]
    cpu = f"{env.get('cpu', env.get('processor', '?'))}, {os.cpu_count()} cores, ISA: {', '.join(isa) or '?'}"
    t0 = time.time()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "minilm"):
            results.append(minilm_bench(args, Path(tmp)))
        if args.only in (None, "effnet"):
            results.append(effnet_bench(args, Path(tmp)))
    meta = {"rounds": args.rounds, "iters": args.iters, "quick": args.quick, "wall_s": round(time.time() - t0, 1), "cpu": cpu, "env": env}
    md = markdown(results, meta)
    from benchmarks.results_io import write_results

    stem = "quantize_accuracy" if args.no_latency else "quantize"  # never overwrite the timed results
    write_results(stem, results, md, meta)  # + the machine, versions, commit and date footer
    print(md)


if __name__ == "__main__":
    main()
