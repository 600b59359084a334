"""`edgeprune sparsify` (N:M, block, unstructured sparsity) CLI commands."""
from __future__ import annotations

import contextlib
from pathlib import Path

import click

from edgeprune.cli.common import console, input_shape_option, profile_or_none, stage
from edgeprune.errors import ConfigError


def _synthetic(loaded, samples: int):
    """Calibration samples shaped like the example inputs (said in the report): a stand-in without --calib."""
    from edgeprune.data import as_data
    from edgeprune.models import InputSpec

    tensors = []
    for i, (name, t) in enumerate(zip(loaded.input_names, loaded.example_inputs)):
        dtype = str(t.dtype).replace("torch.", "")
        spec = InputSpec(name, (samples, *t.shape[1:]), "int64" if dtype == "int64" else "float32" if t.is_floating_point() else dtype)
        tensors.append(spec.make(seed=100 + i).to(t.dtype))
    note = f"calibrated on {samples} synthetic samples shaped like the example inputs (pass --calib for real data)"
    return as_data(tuple(tensors), input_names=loaded.input_names), note


def _data(loaded, method: str, allocation: str, paths: dict, samples: int | None):
    """(calib, train, eval, note): the files given (eval disjoint from the others), synthetic calib when needed."""
    from edgeprune.data import DEFAULT_SAMPLES
    from edgeprune.cli.data import ReadOptions, read_sets

    if paths["train"] and allocation != "learned":
        raise ConfigError("--train feeds the learned allocation only", hint="add --allocation learned, or drop --train")
    with stage("reading data"):
        calib, train, held_out = read_sets(loaded, ReadOptions(n=samples or DEFAULT_SAMPLES), **paths)
    note = None
    needs_calib = method != "magnitude" or (allocation == "learned" and train is None)
    if calib is None and needs_calib:
        calib, note = _synthetic(loaded, samples or 32)
    return calib, train, held_out, note


@click.command("sparsify")
@click.argument("model")
@click.option("--pattern", default="2:4", show_default=True, help="2:4 | N:M | blockRxC (e.g. block4x4) | unstructured.")
@click.option("--method", type=click.Choice(["magnitude", "wanda", "sparsegpt"]), default="sparsegpt", show_default=True)
@click.option("--sparsity", type=float, help="Target sparsity (N:M fixes it; default 0.5 otherwise).")
@click.option("--allocation", type=click.Choice(["uniform", "learned"]), default="uniform", show_default=True)
@click.option("--ignore", multiple=True, metavar="GLOB", help="Module names to leave dense (repeat), e.g. '*.pooler.*'.")
@click.option("--skip-incompatible", is_flag=True, hidden=True, help="The default now (kept so old command lines run).")
@click.option("--strict", is_flag=True, help="Fail on a layer the pattern cannot tile instead of leaving it dense (listed).")
@click.option("--calib", "calib_path", type=click.Path(), metavar="DATA",
              help="Calibration data: a folder of images (or one subfolder per class), .txt, .csv (text,label), .npy/.npz or "
                   "a torch.save'd .pt; default: synthetic samples shaped like the example inputs.")
@click.option("--train", "train_path", type=click.Path(), metavar="DATA",
              help="Samples the learned allocation trains on (--allocation learned; default: the calibration data).")
@click.option("--eval-data", "eval_path", type=click.Path(), metavar="DATA",
              help="Held-out data sharing nothing with --calib/--train: the sparse model is scored against the dense one.")
@click.option("--calib-samples", type=int,
              help="Samples drawn from each DATA (default 128), or synthesized without --calib (default 32).")
@input_shape_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the sparse model as a torch.export .pt2.")
@click.option("--export", "onnx_path", type=click.Path(dir_okay=False), help="Write validated ONNX and re-check the pattern in it.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="Deploy precision: the ONNX written (fp16 / Q/DQ int8) and the acceleration verdicts.")
@click.option("--profile", "profile_name", help="Device profile for the per-runtime verdicts (default: this host).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the per-layer report as JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write the per-layer report as Markdown.")
def sparsify_cmd(model, pattern, method, sparsity, allocation, ignore, skip_incompatible, strict, calib_path, train_path, eval_path,
                 calib_samples, input_shapes, output, onnx_path, precision, profile_name, json_path, md_path):
    """Sparsify MODEL's Linear/Conv weights with a pattern; report per layer whether each runtime accelerates it."""
    from edgeprune._io import atomic_path, write_text_atomic
    from edgeprune.models import load_model
    from edgeprune.sparsity import SparsityConfig, sparsify

    for path, suffix, flag in ((output, ".pt2", "-o"), (onnx_path, ".onnx", "--export"), (json_path, ".json", "--json"),
                               (md_path, ".md", "--markdown")):
        if path and not path.endswith(suffix):
            raise ConfigError(f"{flag} {path} must end in {suffix}", hint=f"e.g. {flag} model{suffix}")
    if calib_samples is not None and calib_samples < 1:
        raise ConfigError(f"--calib-samples must be >= 1, got {calib_samples}")
    cfg = SparsityConfig(pattern=pattern, method=method, sparsity=sparsity, allocation=allocation, ignore=tuple(ignore),
                         on_incompatible="error" if strict and not skip_incompatible else "skip")
    profile = profile_or_none(profile_name)
    with stage(f"loading {model}"):
        loaded = load_model(model, input_shapes)
    if loaded.module is None:
        raise ConfigError(f"{model} is ONNX; sparsify needs a PyTorch model", hint="pass a model spec, HF folder or .pt2")
    paths = {"calib": calib_path, "train": train_path, "eval_data": eval_path}
    calib, train, held_out, note = _data(loaded, method, allocation, paths, calib_samples)
    with stage(f"sparsifying ({cfg.pattern.name}, {method}, {allocation})"):
        sparse, report = sparsify(loaded, None, cfg, calib=calib, train=train, return_report=True)
    if note:
        report.notes.append(note)
    if held_out is not None:
        from edgeprune.cli.data import held_out_score

        report.evidence["held_out"] = held_out_score(loaded.module, sparse, held_out).line()
    # every output goes to a temp file first and is renamed only when all of them succeeded
    with contextlib.ExitStack() as stack:
        if onnx_path:
            tmp_onnx = stack.enter_context(atomic_path(onnx_path, suffix=".onnx"))
            report.evidence["onnx"] = _export_checked(sparse, loaded, cfg, onnx_path, tmp_onnx, precision, calib)
        if output:
            import torch

            tmp_pt2 = stack.enter_context(atomic_path(output, suffix=".pt2"))
            with stage(f"writing {output}"):
                torch.export.save(torch.export.export(sparse, tuple(loaded.example_inputs)), str(tmp_pt2))
    report.assess(profile=profile, precision=precision)
    console.print(report.table())
    console.print(f"global sparsity {report.global_sparsity:.2%} over {len(report.sparsified)} layers in {report.seconds:.1f} s")
    for rt, s in report.summary().items():
        console.print(f"[dim]{rt}: {s['verdicts']} — {s['main_reason'][:160]}[/dim]")
    if "held_out" in report.evidence:
        console.print(report.evidence["held_out"])
    for n in report.notes:
        console.print(f"[yellow]note:[/yellow] {n}")
    if json_path:
        write_text_atomic(json_path, report.to_json())
    if md_path:
        write_text_atomic(md_path, report.markdown())


def _export_checked(sparse, loaded, cfg, onnx_path: str, tmp: Path, precision: str, calib) -> str:
    """Export (fp32, then fp16 / Q/DQ if asked) to a temp file, re-check the pattern in it, then rename into place."""
    import tempfile

    from edgeprune.data import as_data
    from edgeprune.errors import ExportError, SparsityError
    from edgeprune.exporter import REFERENCE, export
    from edgeprune.sparsity.onnx_check import check_onnx, convert_fp16, quantize_qdq

    with tempfile.TemporaryDirectory(prefix="edgeprune-sparsify-") as tmpdir:
        fp32 = Path(tmpdir) / "fp32.onnx"
        with stage(f"exporting to {onnx_path} and validating on {REFERENCE}"):
            export(sparse, tuple(loaded.example_inputs), fp32, input_names=loaded.input_names)
        try:
            if precision == "fp16":
                convert_fp16(fp32, tmp)
            elif precision == "int8":
                # calibration batches at the exported (static) batch size, at most 8: ranges for the uint8 activations
                b = loaded.example_inputs[0].shape[0]
                source = calib if calib is not None and len(calib) >= b else as_data(tuple(loaded.example_inputs),
                                                                                     input_names=loaded.input_names)
                feeds = source.feeds(loaded.input_names, batch_size=b)[:8]
                with stage("Q/DQ int8 quantization"):
                    quantize_qdq(fp32, tmp, feeds)
            else:
                tmp.write_bytes(fp32.read_bytes())
        except Exception as err:  # onnxruntime's converters raise many types; one line for the user
            raise ExportError(f"{precision} conversion of {onnx_path} failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}",
                              hint="try --precision fp32") from err
        check = check_onnx(tmp, cfg.pattern, model=sparse)
        if not check.ok:
            bad = check.failures()[:1]
            what = f"{bad[0].initializer}: {bad[0].check.detail}" if bad else f"missing {check.missing[:3]}"
            raise SparsityError(f"the pattern did not survive into {onnx_path} ({precision}): {what}",
                                hint="report this model; nothing was written")
    return f"{len(check.weights)} weights re-checked in {Path(onnx_path).name} ({precision}): pattern {cfg.pattern.name} kept, sparsity {check.sparsity:.1%}"


COMMANDS = [sparsify_cmd]
