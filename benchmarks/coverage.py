"""Which real architectures edgeprune prunes, exports and speeds up: 30+ Hugging Face configs with random weights and
our own UNet, YOLO-style detector and DenseNet-style concat net (benchmarks/coverage_zoo.py).

    python benchmarks/coverage.py [--only ResNet,BERT] [--rounds 7]

Per model: `edgeprune.prune(model, inputs, StructuredConfig(ratio=r))` at r = 0.3 and 0.5 (default importance and
compensation, 8 random calibration samples: this is coverage, not quality), MACs kept (aten-level count), the
layers left whole; at 0.5 the dense and pruned models exported to ONNX and validated on ONNX Runtime against
PyTorch (max abs diff, export's 1e-4 tolerance), then timed at batch 1 on ONNX Runtime and OpenVINO in interleaved
rounds (speedup = median of per-round p50 ratios, min-max over rounds) and speedup / MAC reduction.
Writes benchmarks/results/coverage.md|json after every model (a partial run keeps what it measured).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.coverage_zoo import MODELS  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402
import edgeprune as ep  # noqa: E402
from edgeprune.errors import EdgepruneError  # noqa: E402
from edgeprune.pruning import StructuredConfig  # noqa: E402

RUNTIMES = ("onnxruntime", "openvino")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def reason(err: BaseException) -> str:
    """One line: the user-facing message of our errors, else the exception type and its first line."""
    text = err.message if isinstance(err, EdgepruneError) else f"{type(err).__name__}: {err}"
    return " ".join(str(text).split())[:240]


def calib_like(inputs: tuple, n: int = 8) -> list[tuple]:
    """n random samples shaped like the example inputs: token ids within the ids' range, masks as given."""
    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(n):
        sample = []
        for t in inputs:
            if t.is_floating_point():
                sample.append(torch.randn(t.shape, generator=g))
            elif int(t.max()) <= 1:
                sample.append(t.clone())
            else:
                sample.append(torch.randint(5, int(t.max()) + 1, t.shape, generator=g))
        out.append(tuple(sample))
    return out


def prune_at(model, inputs, ratio: float) -> tuple[object | None, dict]:
    lines: list[str] = []
    try:
        pruned = ep.prune(model, inputs, StructuredConfig(ratio=ratio), calib=calib_like(inputs), progress=lines.append)
    except Exception as err:  # any failure is a coverage result, said in one line
        return None, {"pruned": False, "reason": reason(err)}
    left = [ln for ln in lines if ln.startswith("left unpruned")]
    macs = ep.count(pruned, inputs).macs
    return pruned, {"pruned": True, "macs": macs, "left_unpruned": left}


def timed(paths: dict[str, Path], inputs, names, runtime: str, rounds: int) -> dict:
    from edgeprune.backends import BackendOptions, get_backend
    from edgeprune.measurement.bench import benchmark_sessions, compare

    feeds = {n: t.numpy() for n, t in zip(names, inputs)}
    sessions = []
    for label, path in paths.items():
        sess = get_backend(runtime, BackendOptions(precision="fp32"))
        sess.compile(path)
        sessions.append((label, sess, sess.prepare_inputs(feeds)))
    res = benchmark_sessions(sessions, batch=1, warmup=5, iters=None, seconds=0.25, rounds=rounds)
    s = compare(res)[0]
    return {"dense_ms": res[0].stats.p50, "pruned_ms": res[1].stats.p50,
            "speedup": {"median": s.median, "min": s.min, "max": s.max, "rounds": s.rounds}}


def export_pair(dense, pruned, inputs, names, tmp: Path) -> tuple[dict[str, Path], dict]:
    paths, info = {}, {}
    for label, m in (("dense", dense), ("pruned", pruned)):
        path = tmp / f"{label}.onnx"
        try:
            rep = ep.export(m, inputs, path, input_names=names)
        except Exception as err:
            return {}, {"exported": False, "reason": f"{label}: {reason(err)}"}
        paths[label] = path
        info[f"{label}_max_abs_diff"] = rep.max_abs_diff
    return paths, {"exported": True, **info}


def one(name: str, family: str, build, rounds: int) -> dict:
    row: dict = {"model": name, "family": family}
    try:
        model, inputs, names = build()
    except Exception as err:
        return {**row, "built": False, "reason": reason(err)}
    row["dense_macs"] = ep.count(model, inputs).macs
    for ratio in (0.3, 0.5):
        pruned, info = prune_at(model, inputs, ratio)
        row[f"r{int(ratio * 100)}"] = {**info, **({"macs_kept": info["macs"] / row["dense_macs"]} if pruned else {})}
    if pruned is None:
        return row
    with tempfile.TemporaryDirectory() as tmp:
        paths, info = export_pair(model, pruned, inputs, names, Path(tmp))
        row["export"] = info
        for rt in RUNTIMES if paths else ():
            try:
                row[rt] = timed(paths, inputs, names, rt, rounds)
                row[rt]["per_mac"] = row[rt]["speedup"]["median"] / (row["dense_macs"] / row["r50"]["macs"])
            except Exception as err:
                row[rt] = {"reason": reason(err)}
    return row


def ok50(r: dict) -> bool:
    return bool(r.get("r50", {}).get("pruned") and r.get("export", {}).get("exported")
                and r["r50"]["macs"] < r["dense_macs"])


def _cell(r: dict, key: str) -> str:
    p = r.get(key, {})
    if not p:
        return "-"
    return f"yes, {100 * p['macs_kept']:.0f}% MACs" if p.get("pruned") else "no"


def _speed(r: dict, rt: str) -> tuple[str, str]:
    t = r.get(rt)
    if not t or "speedup" not in t:
        return ("-" if not t else "failed"), "-"
    s = t["speedup"]
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})", f"{t['per_mac']:.2f}"


def _why(r: dict) -> str:
    for key in ("reason",):
        if r.get(key):
            return r[key]
    for part in ("r50", "r30", "export", *RUNTIMES):
        if r.get(part, {}).get("reason"):
            return f"{part}: {r[part]['reason']}"
    left = r.get("r50", {}).get("left_unpruned") or []
    return f"{len(left)} left whole, e.g. {left[0].split(':')[1].strip()}" if left else ""


def summary(rows: list[dict]) -> dict:
    good = [r for r in rows if ok50(r)]
    out = {"architectures": len(rows), "pruned_exported_validated_50": len(good),
           "share": len(good) / max(len(rows), 1)}
    for rt in RUNTIMES:
        timed_rows = [r for r in good if "speedup" in r.get(rt, {})]
        out[rt] = {"timed": len(timed_rows),
                   "median_speedup_per_mac_reduction": statistics.median(r[rt]["per_mac"] for r in timed_rows)
                   if timed_rows else None,
                   "median_speedup": statistics.median(r[rt]["speedup"]["median"] for r in timed_rows) if timed_rows else None,
                   "slower_than_dense": [r["model"] for r in timed_rows if r[rt]["speedup"]["median"] < 1.0]}
    return out


def markdown(rows: list[dict], rounds: int) -> str:
    s = summary(rows)
    lines = ["# Architecture coverage: structured pruning at 30% / 50%, export, ONNX Runtime and OpenVINO speed", "",
             f"{s['architectures']} architectures (Hugging Face `transformers` configs with random weights, plus our "
             "own UNet, YOLO-style detector and DenseNet-style net; benchmarks/coverage_zoo.py). "
             "`edgeprune.prune(..., StructuredConfig(ratio=r))` with its defaults; batch 1; "
             f"{rounds} interleaved rounds per runtime; speedup = median of per-round p50 ratios (min-max).", "",
             f"- pruned, exported and validated (ONNX Runtime vs PyTorch, max abs diff <= 1e-4) at 50%: "
             f"**{s['pruned_exported_validated_50']} of {s['architectures']} ({100 * s['share']:.0f}%)**"]
    for rt in RUNTIMES:
        v = s[rt]
        if v["timed"]:
            lines.append(f"- {rt}: median speedup {v['median_speedup']:.2f}x, median speedup / MAC reduction "
                         f"**{v['median_speedup_per_mac_reduction']:.2f}** over {v['timed']} models; slower than "
                         f"dense: {', '.join(v['slower_than_dense']) or 'none'}")
    lines += ["", "| model | family | 30% | 50% | export max abs diff (pruned) | ONNX Runtime speedup | ORT / MAC red. "
              "| OpenVINO speedup | OV / MAC red. | left whole, or why not |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ort, ort_m = _speed(r, "onnxruntime")
        ov, ov_m = _speed(r, "openvino")
        diff = r.get("export", {}).get("pruned_max_abs_diff")
        lines.append(f"| {r['model']} | {r['family']} | {_cell(r, 'r30')} | {_cell(r, 'r50')} | "
                     f"{'-' if diff is None else f'{diff:.1e}'} | {ort} | {ort_m} | {ov} | {ov_m} | "
                     f"{_why(r).replace('|', '/')} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    names = [n for n in MODELS if not args.only or n in args.only.split(",")]
    rows = []
    for name in names:
        family, build = MODELS[name]
        t0 = time.time()
        try:
            row = one(name, family, build, args.rounds)
        except Exception as err:  # a crash in one model is its row, not the end of the run
            traceback.print_exc()
            row = {"model": name, "family": family, "reason": reason(err)}
        row["wall_s"] = time.time() - t0
        rows.append(row)
        log(f"{name}: ok50={ok50(row)} {_cell(row, 'r50')} ort={_speed(row, 'onnxruntime')[0]} "
            f"ov={_speed(row, 'openvino')[0]} {_why(row)[:120]} ({row['wall_s']:.0f} s)")
        if not args.only:
            write_results("coverage", {"rows": rows}, markdown(rows, args.rounds), {"summary": summary(rows)})
    print(markdown(rows, args.rounds))


if __name__ == "__main__":
    main()
