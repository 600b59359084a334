"""`edgeprune optimize` and `edgeprune apply`.

With no arguments, `optimize` makes the packaged MiniLM-L6 1.5x faster on this machine's ONNX Runtime,
calibrating on sentences from the model's own card (shipped in the package) and scoring fidelity on
held-out ones, then prints the before/after table.
"""
from __future__ import annotations

import re
from pathlib import Path

import click
from rich.table import Table

from edgeprune.cli_run import console, err_console, input_shape_option
from edgeprune.errors import ConfigError


def minilm_texts() -> list[str]:
    """Real English sentences that ship with the packaged MiniLM (its model card)."""
    from edgeprune.models import builtin_path

    text = (builtin_path("minilm") / "README.md").read_text(encoding="utf-8")
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s.split()) >= 5]


def minilm_batches(texts: list[str], batch: int = 8, seq_len: int = 128) -> list[tuple]:
    from transformers import AutoTokenizer

    from edgeprune.models import builtin_path

    tok = AutoTokenizer.from_pretrained(str(builtin_path("minilm")), local_files_only=True)
    out = []
    for i in range(0, len(texts), batch):
        enc = tok(texts[i:i + batch], padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
        out.append((enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]))
    return out


def masked_embedding_fidelity(dense, eval_batches):
    """evaluate(model) for encoders: 100 x mean cosine of mask-aware mean-pooled embeddings vs dense."""
    import torch

    def pooled(model):
        outs = []
        with torch.no_grad():
            for ids, mask, types in eval_batches:
                h = model(ids, mask, types)
                m = mask.unsqueeze(-1).to(h.dtype)
                outs.append((h * m).sum(1) / m.sum(1).clamp_min(1))
        return torch.cat(outs)

    ref = pooled(dense)
    return lambda model: float(100 * torch.nn.functional.cosine_similarity(pooled(model), ref, dim=-1).mean())


def _load_eval(spec: str | None):
    if not spec:
        return None
    from edgeprune.models import _import_factory

    return _import_factory(spec)


def _summary_table(result) -> Table:
    table = Table(title=f"edgeprune optimize: {result.plan.model} on {result.runtime} ({result.profile})",
                  caption="predicted ms = the latency model's ratio x the dense model timed in the same rounds"
                  if result.bench else "predicted ms: latency model only (not measured)")
    for col in ("", "latency p50 ms", "latency p90 ms", "speedup (rounds min-max)", "predicted ms", "MACs (M)", "params (M)", "score"):
        table.add_column(col, justify="right")
    c = result.counts
    dense, opt = (result.bench + [None, None])[:2]
    s = result.speedup
    table.add_row("dense", f"{dense.stats.p50:.2f}" if dense else "-", f"{dense.stats.p90:.2f}" if dense else "-", "1.00x",
                  f"{dense.stats.p50 if dense else result.plan.dense_predicted_s * 1e3:.2f}", f"{c['dense']['macs'] / 1e6:.1f}",
                  f"{c['dense']['params'] / 1e6:.2f}", f"{result.score_dense:.2f}")
    table.add_row("optimized", f"{opt.stats.p50:.2f}" if opt else "-", f"{opt.stats.p90:.2f}" if opt else "-",
                  f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})" if s else "not measured (target is not this machine)",
                  f"{result.predicted_ms:.2f}", f"{c['optimized']['macs'] / 1e6:.1f}", f"{c['optimized']['params'] / 1e6:.2f}",
                  f"{result.score:.2f}")
    return table


@click.command("optimize")
@click.argument("model", required=False, default="minilm")
@click.option("--profile", default="host", show_default=True, help="Device profile name, 'host', or a YAML file.")
@click.option("--runtime", help="Runtime to optimize for (default: the profile's first installed one).")
@click.option("--speedup", type=float, help="Target speedup over the dense model (default 1.5).")
@click.option("--latency-ms", type=float, help="Target p50 latency in ms instead of --speedup.")
@click.option("--macs-ratio", type=float, help="Target MACs fraction instead of --speedup.")
@input_shape_option
@click.option("--eval", "eval_spec", help="module:fn or file.py:fn; fn(model) -> score in points (higher is better).")
@click.option("--max-drop", default=1.0, show_default=True, type=float, help="Largest score drop accepted (points).")
@click.option("--recover-steps", default=0, show_default=True, type=int, help="Distillation steps after pruning.")
@click.option("--importance", default="numerical", show_default=True)
@click.option("--threads", type=int)
@click.option("--sparse-attention", "sparse_attention", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="Block-sparse attention after pruning: auto = only where the latency model says it pays at the model's length.")
@click.option("-o", "--output", "outdir", default="edgeprune-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--bundle", "bundle_path", type=click.Path(dir_okay=False),
              help="Also pack OUTDIR into a deployable NAME.tar.gz (see `edgeprune bundle`).")
def optimize_cmd(model, profile, runtime, speedup, latency_ms, macs_ratio, input_shapes, eval_spec, max_drop, recover_steps,
                 importance, threads, sparse_attention, outdir, bundle_path):
    """Optimize MODEL (default: the packaged MiniLM-L6) for a device: plan, prune, validate, measure."""
    from edgeprune.models import load_model
    from edgeprune.optimizer import optimize
    from edgeprune.optimizer.output import write_outdir

    if speedup is None and latency_ms is None and macs_ratio is None:
        speedup = 1.5
    if bundle_path and not bundle_path.endswith((".tar.gz", ".tgz")):
        raise ConfigError(f"--bundle {bundle_path} must end in .tar.gz", hint="e.g. --bundle model.tar.gz")
    evaluate = _load_eval(eval_spec)
    loaded = load_model(model, input_shapes)
    if loaded.module is None:
        raise ConfigError(f"{model} is ONNX; optimize needs a PyTorch model", hint="pass a model spec, HF folder or .pt2")
    calib = eval_inputs = None
    if model == "minilm":
        texts = minilm_texts()
        calib, eval_inputs = minilm_batches(texts[:48]), minilm_batches(texts[48:])
        evaluate = evaluate or masked_embedding_fidelity(loaded.module, eval_inputs)
    with err_console.status("optimizing") as status:
        result = optimize(loaded.module, loaded.example_inputs, profile=profile, runtime=runtime, speedup=speedup,
                          latency_ms=latency_ms, macs_ratio=macs_ratio, calib=calib, eval_inputs=eval_inputs,
                          evaluate=evaluate, max_drop=max_drop, recover_steps=recover_steps, importance=importance,
                          threads=threads, input_names=loaded.input_names, model_name=loaded.name, attention=sparse_attention,
                          progress=lambda msg: status.update(msg))
        status.update("writing the output folder")
        write_outdir(result, outdir, loaded.name)
        if bundle_path:
            from edgeprune.bundle import build_bundle

            status.update("packing the bundle")
            build_bundle(outdir, bundle_path, name=loaded.name)
    console.print(_summary_table(result))
    last = result.attempts[-1]
    console.print(f"{len(result.attempts)} attempt(s); last: {last.note}. Prediction error "
                  f"{'%+.1f%%' % (100 * result.prediction_error) if result.prediction_error is not None else 'n/a'}. "
                  f"Wall time {result.seconds:.0f} s. Output: {outdir}/ (plan.json, model.onnx, model.xml, report.json, report.html)")
    attn = result.plan.attention
    if attn:
        console.print(f"sparse attention {'applied' if attn['applied'] else 'not applied'}: {attn['reason']}")


@click.command("apply")
@click.argument("plan_path", type=click.Path(dir_okay=False))
@click.argument("model")
@input_shape_option
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file of the pruned model.")
def apply_cmd(plan_path, model, input_shapes, output):
    """Re-apply a saved (possibly edited) plan.json to MODEL and export the result, validated."""
    from edgeprune.export import export
    from edgeprune.models import load_model
    from edgeprune.optimizer import apply_plan
    from edgeprune.planner import Plan

    if not output.endswith(".onnx"):
        raise ConfigError(f"--output {output} must end in .onnx", hint="e.g. -o pruned.onnx")
    if not Path(plan_path).is_file():
        raise ConfigError(f"plan not found: {plan_path}", hint="pass the plan.json written by `edgeprune optimize`")
    plan = Plan.from_json(Path(plan_path).read_text(), where=plan_path)
    loaded = load_model(model, input_shapes)
    calib = minilm_batches(minilm_texts()[:48]) if model == "minilm" else None
    pruned = apply_plan(plan, loaded.module, loaded.example_inputs, calib=calib)
    report = export(pruned, loaded.example_inputs, output, input_names=loaded.input_names)
    sparse = " and sparse attention" if plan.attention and plan.attention.get("applied") else ""
    console.print(f"applied {plan_path}: {len(plan.per_layer_ratios())} group(s) pruned{sparse}; {output} validated "
                  f"(max abs diff {report.max_abs_diff:.2g})")


COMMANDS = [optimize_cmd, apply_cmd]
