"""`edgeprune optimize` and `edgeprune apply`.

With no arguments, `optimize` makes the packaged MiniLM-L6 faster on this machine's ONNX Runtime, calibrating
and recovering on Rotten Tomatoes snippets shipped in the package and scoring 10-nearest-neighbour overlap with
the dense model on held-out ones, then prints the before/after table and the score after each recovery stage.
"""
from __future__ import annotations

import re
from pathlib import Path

import click
from rich.table import Table

from edgeprune.cli.common import console, err_console, input_shape_option
from edgeprune.cli.data import data_options, read_data_options
from edgeprune.errors import ConfigError
from edgeprune.metrics import METRICS as METRIC_NAMES
from edgeprune.optimizer.config import DEFAULT_SPEEDUP
from edgeprune.quantize import PRECISIONS as QUANT_PRECISIONS
from edgeprune.recover.config import RecoverConfig


def default_data(loaded):
    """The embedded default's data (edgeprune.datasets.minilm_default_sets): calib 256, train 2,744, eval 500."""
    from edgeprune.datasets import minilm_default_sets

    return minilm_default_sets(loaded.input_names)


class ProgressLine:
    """One live line on stderr: the current stage, and during recovery a bar with the loss and the ETA.

    Progress messages that carry "step N/M" (recovery loops) drive the bar; other messages only change the text."""

    STEP = re.compile(r"step (\d+)/(\d+)")

    def __enter__(self):
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                                 console=err_console, transient=True)
        self.progress.__enter__()
        self.task = self.progress.add_task("optimizing", total=None)
        return self

    def update(self, message: str) -> None:
        m = self.STEP.search(message)
        if m:
            self.progress.update(self.task, description=message, completed=int(m.group(1)), total=int(m.group(2)))
        else:
            self.progress.update(self.task, description=message, completed=0, total=None)

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)


def _load_eval(spec: str | None):
    if not spec:
        return None
    from edgeprune.models import import_factory

    return import_factory(spec)


def _caption(result) -> str:
    if not result.bench:
        return "predicted ms: latency model only (not measured)"
    base = "predicted ms = the latency model's ratio x the dense model timed in the same rounds"
    return base + (" / the precision's speedup measured on the dense model" if result.predicted_speedup else "")


def _summary_table(result) -> Table:
    table = Table(title=f"edgeprune optimize: {result.plan.model} on {result.runtime} ({result.profile})",
                  caption=_caption(result))
    for col in ("", "latency p50 ms", "latency p90 ms", "speedup (rounds min-max)", "predicted ms", "MACs (M)", "params (M)",
                f"{result.metric} (held-out)"):
        table.add_column(col, justify="right")
    c = result.counts
    dense, opt = (result.bench + [None, None])[0], (result.bench[-1] if len(result.bench) > 1 else None)
    s = result.speedup
    table.add_row("dense", f"{dense.stats.p50:.2f}" if dense else "-", f"{dense.stats.p90:.2f}" if dense else "-", "1.00x",
                  f"{dense.stats.p50 if dense else result.plan.dense_predicted_s * 1e3:.2f}", f"{c['dense']['macs'] / 1e6:.1f}",
                  f"{c['dense']['params'] / 1e6:.2f}", f"{result.score_dense:.2f}")
    shipped = (result.precision or {}).get("precision", "fp32")
    table.add_row("optimized" + (f" ({shipped})" if shipped != "fp32" else ""), f"{opt.stats.p50:.2f}" if opt else "-", f"{opt.stats.p90:.2f}" if opt else "-",
                  f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})" if s else "not measured (target is not this machine)",
                  f"{result.predicted_ms:.2f}", f"{c['optimized']['macs'] / 1e6:.1f}", f"{c['optimized']['params'] / 1e6:.2f}",
                  f"{result.score:.2f}")
    return table


@click.command("optimize")
@click.argument("model", required=False, default="minilm")
@click.option("--profile", default="host", show_default=True, help="Device profile name, 'host', or a YAML file.")
@click.option("--runtime", help="Runtime to optimize for (default: the profile's first installed one).")
@click.option("--precision", type=click.Choice(["auto", "fp32", *QUANT_PRECISIONS]), default="auto", show_default=True,
              help="auto: time the runtime's INT8/FP16 artifacts beside the dense model and stack the fastest that pays "
                   "within --max-drop with pruning (pruning is asked only for the rest of the speedup).")
@click.option("--speedup", type=float, help=f"Target speedup over the dense model (default {DEFAULT_SPEEDUP}).")
@click.option("--latency-ms", type=float, help="Target p50 latency in ms instead of --speedup.")
@click.option("--macs-ratio", type=float, help="Target MACs fraction instead of --speedup.")
@input_shape_option
@data_options
@click.option("--metric", type=click.Choice(sorted(METRIC_NAMES)),
              help="Held-out metric (default: by the model's head: classifier agreement, embeddings neighbours, LM perplexity).")
@click.option("--eval", "eval_spec", help="module:fn or file.py:fn; fn(model) -> score in points (higher is better).")
@click.option("--max-drop", type=float, help="Largest metric drop accepted (points; perplexity: ppl). Default: 1 point, 30 for neighbours, 1 ppl.")
@click.option("--recover", "recover_mode", type=click.Choice(["auto", "off", "bn", "distill"]), default="auto", show_default=True,
              help="auto: BN re-estimation, then block-local + end-to-end distillation while the drop exceeds --max-drop.")
@click.option("--recover-minutes", type=float, default=RecoverConfig.minutes, show_default=True,
              help="Wall-clock budget of distillation per attempt.")
@click.option("--recover-steps", type=int,
              help="Fixed steps per recovery stage instead of --recover-minutes: a deterministic run under --seed.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False),
              help="Resume the interrupted recovery of OUTDIR (its checkpoint is OUTDIR.recover).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--importance", default="numerical", show_default=True)
@click.option("--threads", type=int)
@click.option("--sparse-attention", "sparse_attention", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="Block-sparse attention after pruning: auto = only where the latency model says it pays at the model's length.")
@click.option("-o", "--output", "outdir", default="edgeprune-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--bundle", "bundle_path", type=click.Path(dir_okay=False),
              help="Also pack OUTDIR into a deployable NAME.tar.gz (see `edgeprune bundle`).")
def optimize_cmd(model, profile, runtime, precision, speedup, latency_ms, macs_ratio, input_shapes, calib, train, eval_data, image_size,
                 metric, eval_spec, max_drop, recover_mode, recover_minutes, recover_steps, resume_dir, seed, importance, threads,
                 sparse_attention, outdir, bundle_path):
    """Optimize MODEL (default: the packaged MiniLM-L6) for a device: plan, prune, recover, verify, measure."""
    import shutil

    from edgeprune.models import load_model
    from edgeprune.optimizer import OptimizeConfig, optimize
    from edgeprune.targets.target import target

    if bundle_path and not bundle_path.endswith((".tar.gz", ".tgz")):
        raise ConfigError(f"--bundle {bundle_path} must end in .tar.gz", hint="e.g. --bundle model.tar.gz")
    if resume_dir:
        outdir = resume_dir
    checkpoint_dir = Path(str(Path(outdir)) + ".recover")
    if resume_dir and not checkpoint_dir.is_dir():
        raise ConfigError(f"--resume {resume_dir}: no interrupted recovery there ({checkpoint_dir} is missing)",
                          hint="resume the -o folder of a run that was stopped during recovery")
    # cheap checks first: a bad option or profile is refused before the model and data are read
    recover = RecoverConfig(mode=recover_mode, minutes=recover_minutes, steps=recover_steps, seed=seed, checkpoint_dir=checkpoint_dir,
                            resume=bool(resume_dir))
    config = OptimizeConfig(speedup=speedup, latency_ms=latency_ms, macs_ratio=macs_ratio, profile=target(profile, runtime),
                            runtime=runtime, precision=precision, metric=metric, max_drop=max_drop, recover=recover,
                            importance=importance, threads=threads, attention=sparse_attention, seed=seed)
    evaluate = _load_eval(eval_spec)
    loaded = load_model(model, input_shapes)
    if loaded.module is None:
        raise ConfigError(f"{model} is ONNX; optimize needs a PyTorch model", hint="pass a model spec, HF folder or .pt2")
    sets = read_data_options(loaded, calib, train, eval_data, image_size)
    if model == "minilm" and calib is None and train is None and eval_data is None:
        sets = default_data(loaded)
    with ProgressLine() as status:
        result = optimize(loaded.module, loaded.example_inputs, config, calib=sets[0], train=sets[1], eval_data=sets[2],
                          evaluate=evaluate, input_names=loaded.input_names, model_name=loaded.name, progress=status.update)
        status.update("writing the output folder")
        result.save(outdir)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the run finished: nothing left to resume
        if bundle_path:
            from edgeprune.deploy.bundle import build_bundle

            status.update("packing the bundle")
            build_bundle(outdir, bundle_path, name=loaded.name)
    _print_result(result, outdir, config)


def _print_result(result, outdir, config) -> None:
    console.print(_summary_table(result))
    for line in recovery_lines(result):
        console.print(line)
    last = result.attempts[-1]
    met = "met" if last.accepted and speed_met(result, config) else "not met"
    console.print(f"{len(result.attempts)} attempt(s); last: {last.note}. Prediction error "
                  f"{'%+.1f%%' % (100 * result.prediction_error) if result.prediction_error is not None else 'n/a'}. "
                  f"Wall time {result.seconds:.0f} s. Output: {outdir}/ ({', '.join(sorted(p.name for p in Path(outdir).iterdir()))})")
    for line in precision_lines(result):
        console.print(line)
    attn = result.plan.attention
    if attn:
        console.print(f"sparse attention {'applied' if attn['applied'] else 'not applied'}: {attn['reason']}")
    console.print(f"targets {met}: " + targets_line(result, config))


def speed_met(result, config) -> bool:
    """The measured speedup meets the ask: within 3% below it, or the ask inside the ~95% interval of the median
    with the median within 10% (the planner's own rule for a miss). A plan that backed off to keep max_drop does
    not meet a speedup it no longer reaches. Budgets other than a measured speedup count as met here."""
    s = result.speedup
    if config.speedup is None or not s:
        return True
    asked, median = float(config.speedup), float(s["median"])
    lo, hi = s.get("ci_low"), s.get("ci_high")
    inside = lo is not None and hi is not None and lo <= asked <= hi and median >= 0.9 * asked
    return median >= 0.97 * asked or inside


def targets_line(result, config) -> str:
    """What was asked and what was measured, in one line: the speedup with its interval, the score and its drop."""
    s = result.speedup
    if config.speedup is None or not s:
        speed = "budget " + (f"{config.latency_ms} ms" if config.latency_ms else f"MACs x{config.macs_ratio}" if config.macs_ratio
                            else f"{config.speedup}x (not measured here)")
    else:
        lo, hi = s.get("ci_low"), s.get("ci_high")
        interval = f" (~95% interval of the median {lo:.2f}-{hi:.2f})" if lo is not None and hi is not None else ""
        speed = f"{s['median']:.2f}x measured{interval} for {config.speedup:.2f}x asked"
    drop = result.score_dense - result.score if result.metric != "perplexity" else result.score - result.score_dense
    data = result.data.get("eval") if isinstance(result.data, dict) else None
    where = f" on {data['samples']} held-out samples ({data['source']})" if data else ""
    return (f"{speed}; {result.metric} {result.score:.2f} vs dense {result.score_dense:.2f}, drop {drop:.2f} "
            f"{'<=' if drop <= result.max_drop else '>'} max_drop {result.max_drop:g}{where}")


def precision_lines(result) -> list[str]:
    """One line per precision candidate: its measurement (or "not measured here") and the verdict with its reason."""
    choice = result.precision
    if not choice:
        return []
    return [f"precision {r['label']}: {r['verdict']}: {r['reason']}" for r in choice["candidates"]]


def recovery_lines(result) -> list[str]:
    """One line per recovery stage of the returned attempt: held-out score and minutes."""
    rec = result.attempts[-1].recovery if result.attempts else None
    if not rec:
        return []
    if rec["stopped"] == "nothing pruned":  # the recovery's own verdict (optimizer/job.py)
        return ["recovery: not needed, nothing was pruned" + (" (the reduced precision alone meets the budget)"
                                                            if result.artifact_path else "")]
    parts = [f"{s['stage']} {s['score']:.2f} ({s['seconds'] / 60:.1f} min{', ' + str(s['steps']) + ' steps' if s['steps'] else ''})"
             for s in rec["stages"]]
    return [f"recovery ({result.metric} on held-out data, dense {result.score_dense:.2f}): " + " -> ".join(parts)
            + f"; stopped: {rec['stopped']}"]


@click.command("apply")
@click.argument("plan_path", type=click.Path(dir_okay=False))
@click.argument("model")
@input_shape_option
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file of the pruned model.")
def apply_cmd(plan_path, model, input_shapes, output):
    """Re-apply a saved (possibly edited) plan.json to MODEL and export the result, validated."""
    from edgeprune.exporter import export
    from edgeprune.models import load_model
    from edgeprune.optimizer import apply_plan
    from edgeprune.optimizer.planner import Plan

    if not output.endswith(".onnx"):
        raise ConfigError(f"--output {output} must end in .onnx", hint="e.g. -o pruned.onnx")
    if not Path(plan_path).is_file():
        raise ConfigError(f"plan not found: {plan_path}", hint="pass the plan.json written by `edgeprune optimize`")
    plan = Plan.from_json(Path(plan_path).read_text(), where=plan_path)
    loaded = load_model(model, input_shapes)
    # the same 256 calibration snippets optimize's compensation used (OptimizeConfig.calib_samples, seed 0)
    calib = default_data(loaded)[0].take(256, 0) if model == "minilm" else None
    pruned = apply_plan(plan, loaded.module, loaded.example_inputs, calib=calib)
    report = export(pruned, loaded.example_inputs, output, input_names=loaded.input_names)
    sparse = " and sparse attention" if plan.attention and plan.attention.get("applied") else ""
    console.print(f"applied {plan_path}: {len(plan.per_layer_ratios())} group(s) pruned{sparse}; {output} validated "
                  f"(max abs diff {report.max_abs_diff:.2g})")


COMMANDS = [optimize_cmd, apply_cmd]
