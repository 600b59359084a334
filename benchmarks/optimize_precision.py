"""edgeprune.optimize with precision="auto" vs "fp32": measured speedup, held-out score, the precision chosen and why.

    python benchmarks/optimize_precision.py [--models minilm,effnet] [--runtimes onnxruntime,openvino]
                                            [--speedups 1.5,2.0,2.5] [--precisions auto,fp32]

Writes benchmarks/results/optimize_precision.md|json. No recovery (--recover off): what moves is the precision.
MiniLM-L6: calibration on the 256 snippets of edgeprune's Rotten Tomatoes `calib` split, optimize scores its
attempts and candidates on the 500 of `eval` (10-NN overlap with dense, max_drop 30: the metric's default);
`test` = the shipped artifact itself (INT8 ONNX / IR, or the FP32 ONNX), run on the runtime, on the 500 of
`probe`, which selected nothing. EfficientNet-Lite0: calibration on 32 crops of 8 photos; optimize scores on 64
crops of 4 other photos (top-1 agreement, max_drop 100: no back-off, as in optimize.md); `test` = the artifact's
agreement on 64 crops of the last 4 photos. Speedups: median of interleaved rounds against the dense FP32 model
(min-max), the stacked (pruned + quantized) artifact timed in the same rounds.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import zoo  # noqa: E402
from benchmarks.recover import NAMES, _encode, _texts  # noqa: E402
from edgeprune.metrics import get_metric  # noqa: E402
from edgeprune.models import HFModelWrapper  # noqa: E402
from edgeprune.optimizer import OptimizeConfig, optimize  # noqa: E402
from edgeprune.quantize.module import ArtifactModule  # noqa: E402
from edgeprune.recover import RecoverConfig  # noqa: E402

ROUNDS = 12
ITERS = {"MiniLM-L6": 100, "EfficientNet-Lite0": 400}
MAX_DROP = {"MiniLM-L6": 30.0, "EfficientNet-Lite0": 100.0}


def minilm_setup():
    model, _ = zoo.minilm()
    wrapped = HFModelWrapper(model, NAMES).eval()
    calib, held, test = _encode(_texts("calib")), _encode(_texts("eval")), _encode(_texts("probe"))
    test_metric = get_metric("neighbours").bind(wrapped, test, input_names=NAMES)
    return "MiniLM-L6", wrapped, tuple(t[:1] for t in calib[0]), NAMES, calib, held, "neighbours", test_metric


def effnet_setup():
    model = zoo.efficientnet_lite0().eval()
    # zoo.imagenet_photos rows: photo i < 16 and its mirror i + 16. Odd photos: never calibrated on. Photos 1-7
    # (and mirrors) select, photos 9-15 (and mirrors) test: no test crop is a view or a mirror of a selecting one
    rows = [i for i in range(32) if i % 2 == 1]
    calib_views = zoo.photo_views(32, [i for i in range(32) if i % 2 == 0], seed=0)
    select_rows, test_rows = [i for i in rows if i % 16 < 8], [i for i in rows if i % 16 >= 8]
    select, test = zoo.photo_views(64, select_rows, seed=1), zoo.photo_views(64, test_rows, seed=1)
    calib = [(calib_views[:16],), (calib_views[16:],)]
    test_metric = get_metric("agreement").bind(model, [(test,)], input_names=["image"])
    return ("EfficientNet-Lite0", model, (calib_views[:1],), ["image"], calib, [(select,)], "agreement", test_metric)


def run_cell(setup, runtime: str, target: float, precision: str, minutes: float = 0.0, max_drop: float | None = None) -> dict:
    """One optimize run; minutes > 0: with that much recovery per attempt, on the `train` split (MiniLM only)."""
    name, model, example, names, calib, held, metric, test_metric = setup
    recover = RecoverConfig(mode="auto", minutes=minutes) if minutes > 0 else RecoverConfig(mode="off")
    config = OptimizeConfig(profile="host", runtime=runtime, speedup=target, metric=metric,
                            max_drop=MAX_DROP[name] if max_drop is None else max_drop,
                            precision=precision, rounds=ROUNDS, iters=ITERS[name], recover=recover)
    train = _encode(_texts("train")) if minutes > 0 and name == "MiniLM-L6" else None
    t0 = time.time()
    res = optimize(model, example, config, calib=calib, train=train, eval_data=held, input_names=names, model_name=name,
                   progress=lambda m: print(f"  {m}", flush=True) if "step" not in m else None)
    wall = time.time() - t0
    shipped = res.artifact_path or res.onnx_path
    test = float(test_metric(ArtifactModule(shipped, runtime, names)))
    s, choice = res.speedup, res.precision or {}
    chosen = next((c for c in choice.get("candidates", []) if c["verdict"].startswith("chosen")), None)
    info = zoo.machine_info()
    return {"model": name, "runtime": runtime, "requested": target, "precision_asked": precision, "recover_minutes": minutes,
            "precision": choice.get("precision", "fp32"), "label": choice.get("label", "FP32"),
            "why": chosen["reason"] if chosen else "no reduced precision asked" if precision == "fp32"
            else "no candidate paid: " + "; ".join(f"{c['label']}: {c['reason']}" for c in choice.get("candidates", [])),
            "candidates": choice.get("candidates", []), "speedup": s["median"], "speedup_min": s["min"],
            "speedup_max": s["max"], "metric": res.metric, "score": res.score, "score_fp32": res.attempts[-1].fp32_score,
            "test": test, "max_drop": res.max_drop, "met": bool(res.attempts[-1].accepted),
            "macs_ratio": res.counts["optimized"]["macs"] / res.counts["dense"]["macs"], "keep": res.plan.keep(),
            "attempts": [{"speedup_fp32": a.speedup["median"] if a.speedup else None,
                          "speedup": (a.stacked or a.speedup or {}).get("median"), "score": a.score, "note": a.note}
                         for a in res.attempts], "wall_s": wall, "date_utc": info["date_utc"], "commit": info["commit"]}


def markdown(rows) -> str:
    lines = ["# optimize: precision auto vs fp32", "",
             "No recovery unless the precision column says so (then `--recover auto` with that many minutes per attempt, "
             "trained on the 2,744 snippets of the `train` split).", "",
             "Score: what optimize selected on (MiniLM: 10-NN overlap with dense on 500 `eval` snippets; EfficientNet-Lite0: "
             "top-1 agreement on 64 crops of 4 photos). Test: the shipped artifact itself, run on the runtime, on data that "
             "selected nothing (MiniLM: 500 `probe` snippets; EfficientNet-Lite0: 64 crops of 4 more photos). Speedup: "
             f"median of {ROUNDS} interleaved rounds against dense FP32 (min-max). See benchmarks/optimize_precision.py.", "",
             "| model | runtime | requested | precision | measured speedup | score | test | drop <= max_drop | MACs kept | chosen, and why | wall s | run (UTC, commit) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rec = f", {r['recover_minutes']:g} min recovery" if r.get("recover_minutes") else ""
        lines.append(f"| {r['model']} | {r['runtime']} | {r['requested']:.1f}x | {r['precision_asked']} -> {r['label']}{rec} | "
                     f"{r['speedup']:.2f}x ({r['speedup_min']:.2f}-{r['speedup_max']:.2f}) | {r['score']:.2f} | {r['test']:.2f} | "
                     f"{'yes' if r['met'] else 'no'} ({r['max_drop']:g}) | {r['macs_ratio']:.0%} | {r['why']} | {r['wall_s']:.0f} | "
                     f"{r['date_utc'][:16]} {r['commit']} |")
    lines += ["", "Candidates that were not chosen (precision auto):", ""]
    for r in rows:
        for c in r["candidates"]:
            if not c["verdict"].startswith("chosen"):
                lines.append(f"- {r['model']} {r['runtime']} {r['requested']:.1f}x, {c['label']}: {c['verdict']}: {c['reason']}")
    lines += ["", "Off the host nothing is timed: the device profile's facts decide which candidates exist "
              "(edgeprune.quantize.offer; `optimize --profile P --runtime R --precision auto`):", "",
              "| profile | runtime | candidate | offered | the facts |", "|---|---|---|---|---|"]
    lines += facts_lines()
    lines += ["", "Attempts (the returned one last): FP32-pruned speedup / shipped speedup, score, note:", ""]
    for r in rows:
        cells = "; ".join(f"{a['speedup_fp32']:.2f}x / {a['speedup']:.2f}x, "
                          f"{'-' if a['score'] is None else format(a['score'], '.2f')}: {a['note']}"
                          for a in r["attempts"] if a["speedup"])
        lines.append(f"- {r['model']} {r['runtime']} {r['requested']:.1f}x {r['precision_asked']}: {cells}")
    return "\n".join(lines) + "\n"


FACTS = [("epyc-zen3", "openvino"), ("epyc-zen3", "onnxruntime"), ("xeon-spr", "openvino"), ("graviton2", "onnxruntime"),
         ("intel-npu-3720", "openvino"), ("jetson-orin-nano", "tensorrt")]


def facts_lines() -> list[str]:
    from edgeprune.quantize.offer import candidates
    from edgeprune.targets.target import target

    return [f"| {p} | {rt} | {c.label} | {'yes' if c.offered else 'no'} | {c.reason} |"
            for p, rt in FACTS for c in candidates(target(p, rt))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="minilm,effnet")
    ap.add_argument("--runtimes", default="onnxruntime,openvino")
    ap.add_argument("--speedups", default="1.5,2.0,2.5")
    ap.add_argument("--precisions", default="auto,fp32")
    ap.add_argument("--name", default="optimize_precision", help="results file stem (trial runs: not the default)")
    ap.add_argument("--max-drop", type=float, default=None, help="override the per-model max_drop (MAX_DROP)")
    ap.add_argument("--recover-minutes", type=float, default=0.0, help="recovery per attempt (default 0: off)")
    ap.add_argument("--append", action="store_true", help="add the rows to results/NAME.json instead of replacing it")
    ap.add_argument("--rewrite", action="store_true", help="re-render the .md from the .json rows (nothing is run)")
    args = ap.parse_args(argv)
    if args.rewrite:
        import json

        doc = json.loads((zoo.RESULTS / f"{args.name}.json").read_text())
        zoo.write_results(args.name, doc["rows"], markdown(doc["rows"]), doc["meta"])
        return
    setups = {"minilm": minilm_setup, "effnet": effnet_setup}
    rows = []
    if args.append:
        import json

        rows = json.loads((zoo.RESULTS / f"{args.name}.json").read_text())["rows"]
    with tempfile.TemporaryDirectory():
        for key in args.models.split(","):
            setup = setups[key]()
            for runtime in args.runtimes.split(","):
                for target in [float(s) for s in args.speedups.split(",")]:
                    for precision in args.precisions.split(","):
                        print(f"[precision] {setup[0]} {runtime} {target}x {precision}", flush=True)
                        rows.append(run_cell(setup, runtime, target, precision, args.recover_minutes, args.max_drop))
                        print({k: v for k, v in rows[-1].items() if k != "candidates"}, flush=True)
                        zoo.write_results(args.name, rows, markdown(rows), vars(args))
    print(markdown(rows))


if __name__ == "__main__":
    main()
