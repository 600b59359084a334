"""`edgeprune sparsify` (N:M, block, unstructured sparsity) CLI commands."""
from __future__ import annotations

import contextlib
from pathlib import Path

import click

from edgeprune.cli_run import console, input_shape_option, stage
from edgeprune.errors import ConfigError


def _calibration(loaded, calib_path: str | None, samples: int):
    """Calibration inputs: a torch.save'd file, or synthetic inputs shaped like the example inputs (said in the report)."""
    import torch

    from edgeprune.models import InputSpec

    if calib_path:
        if not Path(calib_path).is_file():
            raise ConfigError(f"calibration file not found: {calib_path}", hint="torch.save a tensor, tuple or list of input tuples")
        try:
            return torch.load(calib_path, weights_only=True), None
        except Exception as err:  # any unpickling failure is a bad file for the user
            raise ConfigError(f"cannot read calibration file {calib_path}: {type(err).__name__}: {err}") from err
    tensors = []
    for i, (name, t) in enumerate(zip(loaded.input_names, loaded.example_inputs)):
        dtype = str(t.dtype).replace("torch.", "")
        spec = InputSpec(name, (samples, *t.shape[1:]), "int64" if dtype == "int64" else "float32" if t.is_floating_point() else dtype)
        tensors.append(spec.make(seed=100 + i).to(t.dtype))
    return tuple(tensors), f"calibrated on {samples} synthetic samples shaped like the example inputs (pass --calib for real data)"


def _load_profile(name: str | None):
    if not name:
        return None
    try:
        from edgeprune.profiles import load_profile
    except ImportError as err:
        raise ConfigError("device profiles are not available in this build", hint="omit --profile") from err
    return load_profile(name)


@click.command("sparsify")
@click.argument("model")
@click.option("--pattern", default="2:4", show_default=True, help="2:4 | N:M | blockRxC (e.g. block4x4) | unstructured.")
@click.option("--method", type=click.Choice(["magnitude", "wanda", "sparsegpt"]), default="sparsegpt", show_default=True)
@click.option("--sparsity", type=float, help="Target sparsity (N:M fixes it; default 0.5 otherwise).")
@click.option("--allocation", type=click.Choice(["uniform", "learned"]), default="uniform", show_default=True)
@click.option("--ignore", multiple=True, metavar="GLOB", help="Module names to leave dense (repeat), e.g. '*.pooler.*'.")
@click.option("--skip-incompatible", is_flag=True, help="Leave layers the pattern cannot tile dense instead of failing.")
@click.option("--calib", "calib_path", type=click.Path(dir_okay=False), help="torch.save'd calibration inputs.")
@click.option("--calib-samples", default=32, show_default=True, type=int, help="Synthetic calibration samples without --calib.")
@input_shape_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the sparse model as a torch.export .pt2.")
@click.option("--export", "onnx_path", type=click.Path(dir_okay=False), help="Write validated ONNX and re-check the pattern in it.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="Deploy precision: the ONNX written (fp16 / Q/DQ int8) and the acceleration verdicts.")
@click.option("--profile", "profile_name", help="Device profile for the per-runtime verdicts (default: this host).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the per-layer report as JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write the per-layer report as Markdown.")
def sparsify_cmd(model, pattern, method, sparsity, allocation, ignore, skip_incompatible, calib_path, calib_samples, input_shapes,
                 output, onnx_path, precision, profile_name, json_path, md_path):
    """Sparsify MODEL's Linear/Conv weights with a pattern; report per layer whether each runtime accelerates it."""
    from edgeprune._io import atomic_path, write_text_atomic
    from edgeprune.models import load_model
    from edgeprune.sparsity import SparsityConfig, sparsify

    for path, suffix, flag in ((output, ".pt2", "-o"), (onnx_path, ".onnx", "--export"), (json_path, ".json", "--json"),
                               (md_path, ".md", "--markdown")):
        if path and not path.endswith(suffix):
            raise ConfigError(f"{flag} {path} must end in {suffix}", hint=f"e.g. {flag} model{suffix}")
    if calib_samples < 1:
        raise ConfigError(f"--calib-samples must be >= 1, got {calib_samples}")
    cfg = SparsityConfig(pattern=pattern, method=method, sparsity=sparsity, allocation=allocation, ignore=tuple(ignore),
                         on_incompatible="skip" if skip_incompatible else "error")
    profile = _load_profile(profile_name)
    with stage(f"loading {model}"):
        loaded = load_model(model, input_shapes)
    if loaded.module is None:
        raise ConfigError(f"{model} is ONNX; sparsify needs a PyTorch model", hint="pass a model spec, HF folder or .pt2")
    calib, note = (None, None) if method == "magnitude" and allocation == "uniform" else _calibration(loaded, calib_path, calib_samples)
    with stage(f"sparsifying ({cfg.pattern.name}, {method}, {allocation})"):
        sparse, report = sparsify(loaded, None, cfg, calib=calib, return_report=True)
    if note:
        report.notes.append(note)
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
    for n in report.notes:
        console.print(f"[yellow]note:[/yellow] {n}")
    if json_path:
        write_text_atomic(json_path, report.to_json())
    if md_path:
        write_text_atomic(md_path, report.markdown())


def _export_checked(sparse, loaded, cfg, onnx_path: str, tmp: Path, precision: str, calib) -> str:
    """Export (fp32, then fp16 / Q/DQ if asked) to a temp file, re-check the pattern in it, then rename into place."""
    import tempfile

    from edgeprune.errors import ExportError, SparsityError
    from edgeprune.export import export
    from edgeprune.sparsity.onnx_check import check_onnx, convert_fp16, quantize_qdq

    import torch

    source = calib if isinstance(calib, tuple) and all(isinstance(t, torch.Tensor) for t in calib) else tuple(loaded.example_inputs)
    with tempfile.TemporaryDirectory(prefix="edgeprune-sparsify-") as tmpdir:
        fp32 = Path(tmpdir) / "fp32.onnx"
        with stage(f"exporting to {onnx_path} and validating on onnxruntime"):
            export(sparse, tuple(loaded.example_inputs), fp32, input_names=loaded.input_names)
        try:
            if precision == "fp16":
                convert_fp16(fp32, tmp)
            elif precision == "int8":
                # calibration batches at the exported (static) batch size, at most 8: ranges for the uint8 activations
                b = loaded.example_inputs[0].shape[0]
                steps = min(8, source[0].shape[0] // b) or 1
                source = source if source[0].shape[0] >= b else tuple(loaded.example_inputs)
                feeds = [{n: t[i * b:(i + 1) * b].numpy() for n, t in zip(loaded.input_names, source)} for i in range(steps)]
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
