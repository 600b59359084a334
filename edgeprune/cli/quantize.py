"""`edgeprune quantize`: INT8 / FP16 artifacts per runtime, calibrated and validated against FP32."""
from __future__ import annotations

import click

from edgeprune.cli.common import console, input_shape_option, profile_or_none, stage
from edgeprune.quantize import PRECISIONS
from edgeprune.errors import ConfigError


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise ConfigError(f"{what} '{text}' is not a comma-separated list of numbers", hint="e.g. 0.485,0.456,0.406") from err


def _quantizing_runtimes() -> list[str]:
    """Every registered runtime with a quantizer, and its aliases (the --backend choices)."""
    from edgeprune.backends import aliases, backend_classes

    names = [c.name for c in backend_classes() if c.capabilities.quantizers]
    return names + [a for a, name in aliases().items() if name in names and a not in names]


def _output_help() -> str:
    from edgeprune.backends import backend_classes

    by_suffix: dict[str, list[str]] = {}
    for c in backend_classes():
        if c.capabilities.quantizers:
            by_suffix.setdefault(c.capabilities.quantized_suffix, []).append(c.name)
    return " or ".join(f"{suffix} ({'/'.join(names)})" for suffix, names in by_suffix.items()) + "."


@click.command("quantize")
@click.argument("model")
@click.option("-b", "--backend", required=True, type=click.Choice(_quantizing_runtimes()),
              help="Runtime the artifact is for.")
@click.option("--calib", "calib_path", type=click.Path(), metavar="DATA",
              help="Calibration data: a folder of images (or one subfolder per class), .txt, .csv (text,label), .npy/.npz, .pt.")
@click.option("--train", "train_path", type=click.Path(), metavar="DATA",
              help="Accepted as on optimize/prune/sparsify, but post-training quantization trains nothing: refused (exit 2).")
@click.option("--eval-data", "eval_path", type=click.Path(), metavar="DATA",
              help="Held-out data (sharing nothing with --calib) the artifact is validated on (default: 16 calibration samples).")
@click.option("--precision", type=click.Choice(PRECISIONS), help="Default: from --profile, else int8.")
@click.option("--profile", "profile_name", help="Device profile that decides the default precision.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help=_output_help())
@input_shape_option
@click.option("--samples", default=128, show_default=True, type=int, help="Calibration samples (deterministic choice).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the calibration sample choice.")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True,
              help="ORT / TensorRT calibration method.")
@click.option("--dynamic", is_flag=True, help="ORT dynamic quantization (no calibration; safer for transformers).")
@click.option("--weights-only", type=click.Choice(["int8_asym", "int8_sym", "int4_sym", "int4_asym"]),
              help="OpenVINO: NNCF weight compression only (NPU transformers).")
@click.option("--seq-len", default=128, show_default=True, type=int, help="Token length for .txt calibration.")
@click.option("--crop", type=int, help="Image crop size (default: the model's static H/W, else 224).")
@click.option("--resize", type=int, help="Shorter image side before the crop (default crop*256/224).")
@click.option("--mean", help="Image mean, comma-separated (default ImageNet).")
@click.option("--std", help="Image std, comma-separated (default ImageNet).")
@click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW", show_default=True)
@click.option("--min-cosine", type=float, help="Fail (exit 2) if any output's cosine to FP32 is below this.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the quantization report as JSON.")
def quantize_cmd(model, backend, calib_path, train_path, eval_path, precision, profile_name, output, input_shapes, samples, seed, method,
                 dynamic, weights_only, seq_len, crop, resize, mean, std, layout, min_cosine, json_path):
    """Quantize MODEL (spec, HF folder, minilm, or .onnx) to INT8 or FP16 for a runtime, validated against FP32."""
    import json
    import tempfile
    from pathlib import Path

    from edgeprune._io import write_text_atomic
    from edgeprune.cli.data import ReadOptions, read_sets
    from edgeprune.quantize import check_request, default_precision, quantize, to_onnx

    if train_path:
        # one option set on every command; here there is no training step for the data to feed
        raise ConfigError(f"--train {train_path}: quantize is post-training and trains nothing",
                          hint="pass the data as --calib, or recover with `edgeprune optimize --train` before quantizing")
    if min_cosine is not None and not -1.0 <= min_cosine <= 1.0:  # NaN fails this too
        raise ConfigError(f"--min-cosine must be in [-1, 1], got {min_cosine}", hint="e.g. --min-cosine 0.99")
    profile = profile_or_none(profile_name)
    if precision is None:
        precision = default_precision(profile) if profile is not None else "int8"
        if precision not in PRECISIONS:
            raise ConfigError(f"profile {profile_name} gains nothing from int8/fp16 by default (it says {precision})",
                              hint="pass --precision int8 or fp16 to quantize anyway")
    backend = check_request(backend, precision)
    config = _backend_config(backend, precision, dynamic, method, weights_only)
    needs_calib = precision == "int8" and not dynamic and not weights_only
    if needs_calib and not calib_path:
        raise ConfigError(f"{backend} int8 needs calibration data", hint="pass --calib DIR|FILE.txt|FILE.npy|FILE.npz")
    with tempfile.TemporaryDirectory(prefix="edgeprune-quantize-") as tmp:
        with stage(f"loading and exporting {model} (validated)"):
            onnx_path, loaded = to_onnx(model, Path(tmp), None, input_shapes)
        options = ReadOptions(n=samples, seed=seed, seq_len=seq_len, crop=crop, resize=resize, mean=_floats(mean, "--mean"),
                              std=_floats(std, "--std"), layout=layout)
        with stage("reading data"):
            # a torch model's spec (minilm, a HF folder) also says where its tokenizer is; an .onnx file its own folder
            calib, _, held_out = read_sets(loaded if loaded is not None else onnx_path, options, calib=calib_path,
                                           eval_data=eval_path)
        with stage(f"quantizing for {backend} ({precision}) and validating"):
            result = quantize(onnx_path, backend, calib, precision, output, config=config, validate_data=held_out)
    _accept(result, min_cosine)
    console.print(f"wrote {result.path} ({backend}, {precision}): {result.bytes / 1e6:.2f} MB (fp32 {result.fp32_bytes / 1e6:.2f} MB), "
                  f"{result.seconds:.1f} s")
    for check in result.checks:
        console.print(f"  {check.name} {check.shape}: cosine {check.cosine:.5f} vs fp32, max abs diff {check.max_abs_diff:.3g}")
    if result.top1_agreement is not None:
        console.print(f"  top-1 agreement with fp32: {100 * result.top1_agreement:.1f}%")
    if "validated_on" in result.details:
        console.print(f"  validated on {result.details['validated_on']['samples']} held-out samples")
    if json_path:
        write_text_atomic(json_path, json.dumps(result.to_dict(), indent=2, default=str))


def _backend_config(backend: str, precision: str, dynamic: bool, method: str, weights_only):
    """The INT8 config of `backend` from the options (None: FP16, or the backend's defaults)."""
    from edgeprune.backends import capabilities
    from edgeprune.models import import_factory

    spec = capabilities(backend).int8_config
    if precision != "int8" or not spec:
        return None
    return import_factory(spec)(method=method, dynamic=dynamic, weights_only=weights_only)


def _accept(result, min_cosine: float | None) -> None:
    """Refuse (and delete) a quantized model whose cosine to FP32 is below --min-cosine."""
    from pathlib import Path

    if min_cosine is not None and not result.min_cosine >= min_cosine:
        _remove_written(Path(result.path))  # a model that failed its own acceptance line is not left behind
        raise ConfigError(f"quantized model cosine {result.min_cosine:.4f} is below --min-cosine {min_cosine}",
                          hint="try --method entropy/percentile, --dynamic (ORT), or more calibration samples")


def _remove_written(path) -> None:
    """The quantized file and what belongs to it (OpenVINO's .bin, ONNX external data named after it)."""
    for p in (path, path.with_suffix(".bin"), path.with_name(path.name + ".data")):
        p.unlink(missing_ok=True)


COMMANDS = [quantize_cmd]
