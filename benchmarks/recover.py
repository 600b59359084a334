"""Recovery after pruning, stage by stage, on data the model never calibrated or trained on.

    python benchmarks/recover.py [--cells minilm:onnxruntime:2.0,effnet:onnxruntime:1.3] [--minutes 10] [--peer]

One row per (model, runtime, requested speedup) and stage: compensation only, + BN re-estimation, + block-local
reconstruction, + distillation; each with the held-out score, the measured speedup of the plan (median of 20
interleaved rounds against the dense model, min-max) and the minutes spent. Pruning, recovery and scoring run
through `edgeprune.optimize` itself (max_drop 100: no back-off, so every row is at its budget).

MiniLM-L6: calibration on the 256 Rotten Tomatoes snippets of edgeprune's `calib` split, recovery on the 2,744 of
`train`, scores on the 500 of `eval` (disjoint by construction): 10-NN overlap with dense (the gate), embedding
cosine, and a logistic-regression probe trained and tested on 2,000 + 1,000 further snippets of the corpus.
EfficientNet-Lite0: calibration on views of 8 of zoo's 16 photos (+ mirrors), recovery on views of those 8 and
of the 6 further photos of zoo.EXTRA_PHOTOS, top-1 agreement with dense on 128 crops of the other 8.
--peer adds Torch-Pruning's magnitude pruning at the same MACs with the same recovery budget.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import zoo  # noqa: E402
from edgeprune.metrics import first_tensor, get_metric  # noqa: E402
from edgeprune.models import HFModelWrapper  # noqa: E402
from edgeprune.optimizer import OptimizeConfig, optimize  # noqa: E402
from edgeprune.recover import RecoverConfig  # noqa: E402

NAMES = ["input_ids", "attention_mask", "token_type_ids"]
CALIB_ROWS = [i for i in range(32) if i % 2 == 0]  # zoo.imagenet_photos rows: photo i and its mirror i + 16
EVAL_ROWS = [i for i in range(32) if i % 2 == 1]
TRAIN_VIEWS = 512  # random crops of the 28 training images (14 photos and their mirrors)
ITERS = {"MiniLM-L6": 100, "EfficientNet-Lite0": 400}


def _texts(split: str):
    from edgeprune.datasets import rotten_tomatoes

    return rotten_tomatoes(split)[0]


def _encode(texts):
    enc = zoo.minilm_inputs(texts, seq_len=128)
    return [tuple(enc[n][i:i + 16] for n in NAMES) for i in range(0, len(texts), 16)]


def minilm_setup():
    model, _ = zoo.minilm()
    wrapped = HFModelWrapper(model, NAMES).eval()
    calib, train, held = _encode(_texts("calib")), _encode(_texts("train")), _encode(_texts("eval"))
    example = tuple(t[:1] for t in calib[0])
    # the test split: 500 more snippets optimize never sees (its eval split also picks the best checkpoint and
    # decides each stage, so the claims are read here, on text that neither trained nor selected anything)
    test = _encode(_texts("probe"))
    cosine = get_metric("cosine").bind(wrapped, test, input_names=NAMES)
    neighbours = get_metric("neighbours").bind(wrapped, test, input_names=NAMES)
    texts, labels = zoo.rotten_tomatoes()
    probe = (texts[6000:8000], labels[6000:8000], texts[8000:9000], labels[8000:9000])  # not in the shipped 4,000

    def extra(m):
        return {"test_neighbours": neighbours(m), "cosine": cosine(m) / 100, "probe_accuracy": _probe(m, probe)}

    return "MiniLM-L6", wrapped, example, calib, train, held, "neighbours", extra


def _probe(model, probe) -> float:
    from sklearn.linear_model import LogisticRegression

    def emb(texts):
        out = []
        with torch.no_grad():
            for b in _encode(texts):
                h = first_tensor(model(*b))
                m = b[1].unsqueeze(-1).float()
                out.append(((h * m).sum(1) / m.sum(1)).numpy())
        return np.concatenate(out)

    xtr, ytr, xte, yte = probe
    clf = LogisticRegression(max_iter=2000).fit(emb(xtr), ytr)
    return float(100 * clf.score(emb(xte), yte))


def effnet_setup():
    model = zoo.efficientnet_lite0().eval()
    calib_views = zoo.photo_views(32, CALIB_ROWS, seed=0)
    # recovery trains on views of the calibration photos plus every other natural photo the installed packages
    # ship (zoo.EXTRA_PHOTOS): data diversity, not steps, limits recovery from a few dozen photos
    pool = torch.cat([zoo.imagenet_photos()[CALIB_ROWS], zoo.extra_photos()])
    train_views = zoo.photo_views(TRAIN_VIEWS, seed=2, base=pool)
    eval_views = zoo.photo_views(128, EVAL_ROWS, seed=1)
    calib = [(calib_views[:16],), (calib_views[16:],)]
    train = [(train_views[i:i + 16],) for i in range(0, TRAIN_VIEWS, 16)]
    return ("EfficientNet-Lite0", model, (calib_views[:1],), calib, train, [(eval_views,)], "agreement",
            lambda m: {})


def _stamp() -> dict:
    info = zoo.machine_info()  # each row keeps when and at which commit it ran (--append merges runs)
    return {"date_utc": info["date_utc"], "commit": info["commit"]}


def _stage_rows(name, runtime, target, res, extra_by_stage, wall):
    s = res.speedup
    rows = []
    for st in res.attempts[-1].recovery["stages"]:
        rows.append({"model": name, "runtime": runtime, "requested": target, "stage": st["stage"], "score": st["score"],
                     "metric": res.metric, "minutes": st["seconds"] / 60, "steps": st["steps"], "note": st["note"],
                     "speedup": s["median"], "speedup_min": s["min"], "speedup_max": s["max"],
                     "macs_ratio": res.counts["optimized"]["macs"] / res.counts["dense"]["macs"],
                     **extra_by_stage.get(st["stage"], {}), "wall_s": wall, **_stamp()})
    return rows


def run_cell(setup, runtime: str, target: float, minutes: float, precision: str = "fp32"):
    name, model, example, calib, train, held, metric, extra = setup
    config = OptimizeConfig(profile="host", runtime=runtime, speedup=target, metric=metric, max_drop=100.0,
                            iters=ITERS[name], recover=RecoverConfig(mode="distill", minutes=minutes), precision=precision)
    t0 = time.time()
    res = optimize(model, example, config, calib=calib, train=train, eval_data=held,
                   input_names=NAMES if name == "MiniLM-L6" else ["image"], model_name=name,
                   progress=lambda m: print(f"  {m}", flush=True) if "step" not in m or "score" in m else None)
    wall = time.time() - t0
    if res.artifact_path is not None:  # stacked with a reduced precision: the shipped artifact is a stage of its own
        from edgeprune.quantize.module import ArtifactModule

        shipped = ArtifactModule(res.artifact_path, runtime, NAMES if name == "MiniLM-L6" else ["image"])
        rows = _stage_rows(f"{name} (+ {res.precision['label']})", runtime, target, res, {}, wall)
        rows.append(dict(rows[-1], stage=res.precision["label"], score=res.score, minutes=0.0, steps=0, note="",
                         **extra(shipped)))
    else:
        rows = _stage_rows(name, runtime, target, res, {"distill": extra(res.model)}, wall)
    dense_extra = extra(model)
    if dense_extra:  # the dense model's own probe accuracy: what "within 1 point" is read against
        rows.insert(0, dict(rows[0], stage="dense", score=res.score_dense, minutes=0.0, steps=0, note="", speedup=1.0,
                            speedup_min=1.0, speedup_max=1.0, macs_ratio=1.0, **dense_extra))
    return rows, res


def _tp_cnn_at_macs(model, example, target_macs):
    """Torch-Pruning MagnitudePruner (group L2, local) on a CNN, classifier ignored, ratio bisected to target MACs."""
    import copy

    import torch_pruning as tp

    import edgeprune as ep

    def make(r):
        m = copy.deepcopy(model).eval()
        ignored = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
        tp.pruner.MagnitudePruner(m, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=r,
                                  ignored_layers=ignored).step()
        return m

    lo, hi, best = 0.0, 0.9, None
    for _ in range(10):
        r = (lo + hi) / 2
        m = make(r)
        macs = ep.count(m, example).macs
        if best is None or abs(macs - target_macs) < abs(best[1] - target_macs):
            best = (m, macs)
        lo, hi = (r, hi) if macs > target_macs else (lo, r)
    return best


def run_peer(setup, res, minutes: float, target_speedup: float):
    """Torch-Pruning's magnitude pruning at the MACs edgeprune's plan kept, then the same recovery, the same data."""
    import edgeprune as ep
    from edgeprune.recover import recover_model

    name, model, example, calib, train, held, metric, extra = setup
    target = res.counts["optimized"]["macs"]
    if name == "MiniLM-L6":
        from benchmarks.tp_baseline import tp_magnitude_at_macs

        pruned, macs, _ = tp_magnitude_at_macs(model, example, target)
    else:
        pruned, macs = _tp_cnn_at_macs(model, example, target)
    t0 = time.time()
    names = NAMES if name == "MiniLM-L6" else ["image"]
    _, _, report = recover_model(pruned, model, example, train=train, eval_data=held, input_names=names, metric=metric,
                                 config=RecoverConfig(mode="distill", minutes=minutes), max_drop=100.0)
    wall = time.time() - t0
    dense_macs = ep.count(model, example).macs
    ours, peer = _side_by_side(model, [res.model, pruned], example, names, res.runtime, ITERS[name])
    rows = [{"model": f"{name} (Torch-Pruning magnitude)", "runtime": res.runtime, "requested": target_speedup, "stage": st.stage,
             "score": st.score, "metric": metric, "minutes": st.seconds / 60, "steps": st.steps, "note": st.note,
             "speedup": peer["median"], "speedup_min": peer["min"], "speedup_max": peer["max"], "macs_ratio": macs / dense_macs,
             **(extra(pruned) if st.stage == "distill" else {}), "wall_s": wall, **_stamp()} for st in report.stages]
    # edgeprune's returned model again, timed in the same rounds as the peer's (its own row was timed minutes apart)
    rows.append({"model": f"{name} (edgeprune, re-timed beside the peer)", "runtime": res.runtime, "requested": target_speedup,
                 "stage": "distill", "score": res.score, "metric": metric, "minutes": float("nan"), "steps": 0, "note": "",
                 "speedup": ours["median"], "speedup_min": ours["min"], "speedup_max": ours["max"],
                 "macs_ratio": res.counts["optimized"]["macs"] / dense_macs, "wall_s": 0.0, **_stamp()})
    return rows


def _side_by_side(dense, models, example, names, runtime: str, iters: int) -> list[dict]:
    """Speedup (median, min, max of per-round ratios) of each model over dense, all timed in one interleaved run."""
    import tempfile

    import edgeprune as ep
    from edgeprune.backends import BackendOptions, get_backend
    from edgeprune.measurement.bench import benchmark_sessions, compare

    with tempfile.TemporaryDirectory() as tmp:
        sessions = []
        for i, m in enumerate([dense] + list(models)):
            path = Path(tmp) / f"m{i}.onnx"
            ep.export(m, example, path, input_names=names)
            sess = get_backend(runtime, BackendOptions()).compile(path)
            sessions.append((f"m{i}", sess, sess.prepare_inputs({n: t.numpy() for n, t in zip(names, example)})))
        results = benchmark_sessions(sessions, warmup=10, iters=iters, rounds=20)
    return [{"median": s.median, "min": s.min, "max": s.max} for s in compare(results)]


def _speed(r) -> str:
    if r["speedup"] != r["speedup"]:  # NaN: the peer's file is not timed (it is compared at equal MACs)
        return "not timed (equal MACs)"
    return f"{r['speedup']:.2f}x ({r['speedup_min']:.2f}-{r['speedup_max']:.2f})"


def _minutes(r) -> str:
    return "-" if r["minutes"] != r["minutes"] else f"{r['minutes']:.1f}"  # NaN: a re-timing row, no recovery of its own


def markdown(rows) -> str:
    head = ["model", "runtime", "asked", "stage", "metric", "score", "extra", "speedup (min-max)", "MACs kept", "minutes", "steps",
            "run (UTC, commit)"]
    out = ["# Recovery after pruning: score on held-out data after each stage", "",
           "Scores on data the model never calibrated or trained on (see benchmarks/recover.py). `score` is on the eval",
           "split, which also picks the best checkpoint and decides each stage; MiniLM's `test_neighbours`, `cosine` and",
           "`probe_accuracy` are on text that neither trained nor selected anything. Speedup: median of 20 interleaved",
           "rounds against the dense model (min-max over rounds).", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        extra = ", ".join(f"{k} {r[k]:.3f}" if k == "cosine" else f"{k} {r[k]:.1f}"
                          for k in ("test_neighbours", "cosine", "probe_accuracy") if k in r)
        out.append(f"| {r['model']} | {r['runtime']} | {r['requested']}x | {r['stage']} | {r['metric']} | {r['score']:.2f} | "
                   f"{extra} | {_speed(r)} | "
                   f"{100 * r['macs_ratio']:.0f}% | {_minutes(r)} | {r['steps']} | {r['date_utc'][:16]} {r.get('commit') or ''} |")
    return "\n".join(out) + "\n"


def _earlier_rows(name: str, cells: str, peer: bool, precision: str = "fp32") -> list[dict]:
    """Rows of an earlier results file, less those of the cells about to be run again (each row keeps its own date).
    Without --peer a cell's peer rows are kept: a re-run of ours alone must not erase the comparison. A cell is
    (model, runtime, asked, precision): a --precision auto run keeps the FP32 rows of the same cell."""
    import json

    path = zoo.RESULTS / f"{name}.json"
    if not path.is_file():
        return []
    model_of = {"minilm": "MiniLM-L6", "effnet": "EfficientNet-Lite0"}
    again = {(model_of[k], rt, float(t)) for k, rt, t in (c.split(":") for c in cells.split(","))}
    def replaced(r) -> bool:
        labelled = " (" in r["model"]  # the peer's rows, ours re-timed beside it, a labelled re-run
        if r.get("precision", "fp32") != precision:
            return False
        return (r["model"].split(" (")[0], r["runtime"], float(r["requested"])) in again and (peer or not labelled or
                                                                                           precision != "fp32")

    return [r for r in json.loads(path.read_text())["rows"] if not replaced(r)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", default="minilm:onnxruntime:2.0,effnet:onnxruntime:1.3,effnet:onnxruntime:1.5,"
                                       "effnet:onnxruntime:2.0")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--name", default="recover")
    ap.add_argument("--peer", action="store_true", help="also Torch-Pruning magnitude at the same MACs, same recovery")
    ap.add_argument("--precision", default="fp32", help="optimize's --precision (auto: stacked with INT8/FP16 where it pays)")
    ap.add_argument("--append", action="store_true", help="keep the rows of results/NAME.json for cells not run now")
    args = ap.parse_args(argv)
    setups = {"minilm": minilm_setup, "effnet": effnet_setup}
    cache, rows = {}, (_earlier_rows(args.name, args.cells, args.peer, args.precision) if args.append else [])
    for cell in args.cells.split(","):
        key, runtime, target = cell.split(":")
        cache.setdefault(key, setups[key]())
        print(f"[recover] {cell}", flush=True)
        new, res = run_cell(cache[key], runtime, float(target), args.minutes, args.precision)
        new = [dict(r, precision=args.precision) for r in new]
        rows += new
        if args.peer:
            rows += run_peer(cache[key], res, args.minutes, float(target))
        print(new, flush=True)
        zoo.write_results(args.name, rows, markdown(rows), vars(args))
    print(markdown(rows))


if __name__ == "__main__":
    main()
