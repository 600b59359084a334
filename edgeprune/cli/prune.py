"""`edgeprune prune` (structured pruning) CLI commands."""
from __future__ import annotations

import click

from edgeprune.cli.common import conversion_options
from edgeprune.errors import ConfigError


def _prune_noting(prune, loaded, config, calib):
    """(pruned model, its 'left unpruned' lines)."""
    left: list[str] = []
    pruned = prune(loaded.module, loaded.example_inputs, config, calib=calib,
                   progress=lambda line: left.append(line) if line.startswith("left unpruned") else None)
    return pruned, left


def _check_options(output: str, onnx_path: str | None, targets: dict[str, str], importance: str) -> None:
    """Refuse bad output paths and a CLI-impossible importance before any work is done."""
    if not output.endswith(".pt2"):
        raise ConfigError(f"--output {output} must end in .pt2", hint="e.g. -o pruned.pt2")
    if onnx_path and not onnx_path.endswith(".onnx"):
        raise ConfigError(f"--export {onnx_path} must end in .onnx", hint="e.g. --export pruned.onnx")
    if targets and not onnx_path:
        flags = " ".join(f"--{runtime} {path}" for runtime, path in targets.items())
        raise ConfigError(f"{flags} needs --export (it converts the exported ONNX file)", hint=f"--export m.onnx {flags}")
    if importance == "taylor":
        raise ConfigError("importance 'taylor' needs a loss function", hint="use the Python API: prune(..., loss_fn=...)")


@click.command("prune")
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Pruned model (.pt2 ExportedProgram).")
@click.option("--ratio", default=0.5, show_default=True, type=float, help="Fraction of units to remove, in [0, 1).")
@click.option("--unit", default="auto", show_default=True, type=click.Choice(["auto", "channels", "heads", "ffn"]))
@click.option("--importance", default="numerical", show_default=True,
              help="numerical | magnitude | l1 | l2 | wanda | random (taylor needs a loss: Python API).")
@click.option("--scope", default="local", show_default=True, type=click.Choice(["local", "global"]))
@click.option("--calib", "calib_path", type=click.Path(), metavar="DATA",
              help="Calibration data: a folder of images (or one subfolder per class), .txt, .csv (text,label), "
                   ".npy/.npz or .pt; default: the example inputs.")
@click.option("--eval-data", "eval_path", type=click.Path(), metavar="DATA",
              help="Held-out data (same forms as --calib, sharing nothing with it): the pruned model is scored "
                   "against the dense one on it.")
@click.option("--train", "train_path", type=click.Path(), metavar="DATA",
              help="Recovery data (same forms as --calib; default: --calib): after pruning, BN re-estimation and "
                   "distillation from the dense model, verified on --eval-data (required for recovery).")
@click.option("--recover", "recover_mode", type=click.Choice(["auto", "off", "bn", "distill"]), default="auto", show_default=True,
              help="With --eval-data and data to train on: auto stops as soon as the held-out drop is within --max-drop.")
@click.option("--recover-minutes", type=float, default=2.0, show_default=True)
@click.option("--metric", type=click.Choice(["top1", "agreement", "perplexity", "cosine", "neighbours"]),
              help="Held-out metric for recovery (default: by the model's head).")
@click.option("--max-drop", type=float, help="Recovery stops once the drop is within this (default: the metric's, "
              "as on optimize).")
@click.option("--n-calib", default=128, show_default=True, type=int, help="Calibration (and eval) samples used.")
@click.option("--no-compensate", is_flag=True, help="Skip the least-squares refit of consumer layers.")
@click.option("--round-to", type=int, help="Round kept widths to this channel multiple.")
@click.option("--profile", "profile_name", help="Device profile whose channel multiple kept widths are rounded to.")
@click.option("--runtime", help="Runtime the model will run on there (default: the first of the device's runtimes "
                                "installed here); widths are aligned for it.")
@click.option("--ignore", multiple=True, metavar="NAME", help="Module name or glob to leave untouched (repeat).")
@click.option("--strict", is_flag=True, help="Fail on a layer pruning cannot handle instead of leaving it whole.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="SPEC", help="Input shape, e.g. 1x3x224x224 (repeat per input).")
@click.option("--seq-len", default=128, show_default=True, type=int, help="Sequence length of HF example inputs.")
@click.option("--export", "onnx_path", type=click.Path(dir_okay=False), help="Also export the pruned model to validated ONNX.")
@conversion_options
def prune_cmd(model, output, ratio, unit, importance, scope, calib_path, eval_path, train_path, recover_mode, recover_minutes,
              metric, max_drop, n_calib, no_compensate, round_to, profile_name, runtime, ignore, strict, input_shapes, seq_len, onnx_path,
              **options):
    """Structured pruning of MODEL with compensation; writes a physically smaller model."""
    import time

    from edgeprune.cli.common import console, conversions, stage, target_or_none
    from edgeprune.measurement.counting import count
    from edgeprune.cli.data import ReadOptions, held_out_score, read_sets
    from edgeprune.models import load_model
    from edgeprune.pruning import StructuredConfig, prune

    targets = conversions(options)
    _check_options(output, onnx_path, targets, importance)
    if train_path and not eval_path:
        raise ConfigError("--train needs --eval-data: recovery is verified on held-out data",
                          hint="add --eval-data DATA (samples neither --calib nor --train holds)")
    tgt = target_or_none(profile_name, runtime)
    config = StructuredConfig(ratio=ratio, unit=unit, importance=importance, scope=scope, compensate=not no_compensate,
                              round_to=round_to, target=tgt, ignore=tuple(ignore), n_calib=n_calib, strict=strict)
    with stage(f"loading {model}"):
        loaded = load_model(model, input_shapes, seq_len=seq_len)
    if loaded.module is None:
        raise ConfigError(f"{model} is ONNX; pruning needs a PyTorch model", hint="pass a model spec, HF folder or .pt2")
    with stage("reading data"):
        calib, train, held_out = read_sets(loaded, ReadOptions(n=n_calib, seq_len=seq_len), calib=calib_path,
                                           train=train_path, eval_data=eval_path)
    before = count(loaded.module, loaded.example_inputs)
    t0 = time.perf_counter()
    with stage(f"pruning {loaded.name} ({ratio:.0%} of {unit}, {importance} importance)"):
        pruned, left = _prune_noting(prune, loaded, config, calib)
    for line in left:  # parts pruning could not handle, kept whole (--strict makes them errors)
        console.print(line)
    if held_out is not None and recover_mode != "off" and (train_path or calib_path):
        _recover(pruned, loaded, train if train is not None else calib, held_out, recover_mode, recover_minutes, metric,
                 max_drop)
    seconds = time.perf_counter() - t0
    after = count(pruned, loaded.example_inputs)
    with stage(f"saving {output}"):
        _save_pt2(pruned, loaded.example_inputs, output)
    console.print(f"pruned {loaded.name} in {seconds:.1f} s: MACs {before.macs / 1e6:.1f}M -> {after.macs / 1e6:.1f}M "
                  f"({after.macs / max(before.macs, 1):.1%}), params {before.params / 1e6:.2f}M -> {after.params / 1e6:.2f}M; wrote {output}")
    if held_out is not None:
        console.print(held_out_score(loaded.module, pruned, held_out).line())
    if onnx_path:
        _export(pruned, loaded, onnx_path, targets)


def _export(pruned, loaded, onnx_path: str, targets: dict[str, str]) -> None:
    """--export (validated on the reference runtime) and the --<runtime> conversions of it."""
    from edgeprune.cli.common import console, stage, write_conversions
    from edgeprune.exporter import REFERENCE, export, torch_outputs

    with stage(f"exporting to {onnx_path} and validating on {REFERENCE}"):
        export(pruned, loaded.example_inputs, onnx_path, input_names=loaded.input_names)
    console.print(f"wrote {onnx_path} (validated on {REFERENCE})")
    feeds = {n: t.numpy() for n, t in zip(loaded.input_names, loaded.example_inputs)}
    for report in write_conversions(onnx_path, targets, (torch_outputs(pruned, loaded.example_inputs), feeds)):
        console.print(f"wrote {report.path} (validated on {report.runtime})")


def _save_pt2(pruned, example_inputs, output: str) -> None:
    import torch

    from edgeprune._io import atomic_path

    try:
        program = torch.export.export(pruned, tuple(example_inputs))
    except Exception as err:  # torch.export raises many types on untraceable models
        from edgeprune.errors import PruningError

        raise PruningError(f"the pruned model does not run under torch.export: {type(err).__name__}: {str(err)[:200]}",
                           hint="use --export to write ONNX only after fixing the model, or ignore= the failing part") from err
    with atomic_path(output, suffix=".pt2") as tmp:
        torch.export.save(program, str(tmp))


def _recover(pruned, loaded, train, held_out, mode: str, minutes: float, metric: str | None, max_drop: float | None) -> None:
    """BN re-estimation and distillation of `pruned` toward the dense model; prints the score after each stage."""
    from edgeprune.cli.common import console, err_console
    from edgeprune.metrics import default_metric_name
    from edgeprune.metrics.limits import DEFAULT_MAX_DROP
    from edgeprune.recover import RecoverConfig, recover_model

    if max_drop is None:
        name = metric or default_metric_name(loaded.module, tuple(loaded.example_inputs), list(loaded.input_names))
        max_drop = DEFAULT_MAX_DROP[name]
    with err_console.status("recovering") as status:
        name, dense, report = recover_model(pruned, loaded.module, tuple(loaded.example_inputs), train=train,
                                            eval_data=held_out, input_names=list(loaded.input_names), metric=metric,
                                            config=RecoverConfig(mode=mode, minutes=minutes), max_drop=max_drop,
                                            say=status.update)
    stages = " -> ".join(f"{s.stage} {s.score:.2f} ({s.seconds / 60:.1f} min)" for s in report.stages)
    console.print(f"recovery ({name} on held-out data, dense {dense:.2f}): {stages}; stopped: {report.stopped}")


COMMANDS = [prune_cmd]
