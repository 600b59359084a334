"""`edgeprune quantize`: INT8 / FP16 artifacts per runtime, calibrated and validated against FP32."""
from __future__ import annotations

import click

from edgeprune.cli_run import console, input_shape_option, stage
from edgeprune.errors import ConfigError


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise ConfigError(f"{what} '{text}' is not a comma-separated list of numbers", hint="e.g. 0.485,0.456,0.406") from err


def _profile(name: str | None):
    if not name:
        return None
    try:
        from edgeprune.profiles import load_profile
    except ImportError as err:
        raise ConfigError("device profiles are not available in this build", hint="pass --precision instead of --profile") from err
    return load_profile(name)


def _image_preprocess(model_onnx, crop, resize, mean, std, layout):
    """Image settings: the model's static spatial dims decide the crop unless --crop is given."""
    from edgeprune.calibration import ImagePreprocess, onnx_input_specs

    spec = next((s for s in onnx_input_specs(model_onnx) if s.dtype.startswith("float")), None)
    if crop is None and spec is not None and len(spec.shape) == 4:
        dims = spec.shape[2:] if layout.upper() == "NCHW" else spec.shape[1:3]
        crop = next((d for d in dims if isinstance(d, int) and d > 0), None)
    kwargs = {"crop": crop or 224, "resize": resize, "layout": layout}
    if mean:
        kwargs["mean"] = mean
    if std:
        kwargs["std"] = std
    return ImagePreprocess(**kwargs), (spec.name if spec else "input")


@click.command("quantize")
@click.argument("model")
@click.option("-b", "--backend", required=True, type=click.Choice(["onnxruntime", "openvino", "tensorrt", "ort", "ov", "trt"]),
              help="Runtime the artifact is for.")
@click.option("--calib", "calib_path", type=click.Path(), help="Calibration data: a folder of images, a .txt of lines, a .npy/.npz.")
@click.option("--precision", type=click.Choice(["int8", "fp16"]), help="Default: from --profile, else int8.")
@click.option("--profile", "profile_name", help="Device profile that decides the default precision.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help=".onnx (onnxruntime/tensorrt) or .xml (openvino).")
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
def quantize_cmd(model, backend, calib_path, precision, profile_name, output, input_shapes, samples, seed, method, dynamic,
                 weights_only, seq_len, crop, resize, mean, std, layout, min_cosine, json_path):
    """Quantize MODEL (spec, HF folder, minilm, or .onnx) to INT8 or FP16 for a runtime, validated against FP32."""
    import json
    import tempfile
    from pathlib import Path

    from edgeprune._io import write_text_atomic
    from edgeprune.calibration import CalibrationData
    from edgeprune.models import BUILTIN_MODELS, builtin_path
    from edgeprune.quantize import _check, default_precision, quantize, to_onnx

    profile = _profile(profile_name)
    if precision is None:
        precision = default_precision(profile) if profile is not None else "int8"
        if precision not in ("int8", "fp16"):
            raise ConfigError(f"profile {profile_name} gains nothing from int8/fp16 by default (it says {precision})",
                              hint="pass --precision int8 or fp16 to quantize anyway")
    backend = _check(backend, precision)
    config = None
    if backend == "onnxruntime" and precision == "int8":
        from edgeprune.quantize.ort import OrtQuantConfig

        config = OrtQuantConfig(mode="dynamic" if dynamic else "static", method=method)
    elif backend == "tensorrt" and precision == "int8":
        from edgeprune.quantize.trt import TrtQdqConfig

        config = TrtQdqConfig(method=method)
    elif backend == "openvino" and precision == "int8":
        from edgeprune.quantize.ov import OvQuantConfig

        config = OvQuantConfig(weight_compression=weights_only)
    needs_calib = precision == "int8" and not dynamic and not weights_only
    if needs_calib and not calib_path:
        raise ConfigError(f"{backend} int8 needs calibration data", hint="pass --calib DIR|FILE.txt|FILE.npy|FILE.npz")
    with tempfile.TemporaryDirectory(prefix="edgeprune-quantize-") as tmp:
        with stage(f"loading and exporting {model} (validated)"):
            onnx_path, loaded = to_onnx(model, Path(tmp), None, input_shapes)
        calib = None
        if calib_path:
            path = Path(calib_path)
            tokenizer = builtin_path(model) if model in BUILTIN_MODELS else (Path(model) if Path(model).is_dir() else None)
            preprocess, image_input = _image_preprocess(onnx_path, crop, resize, _floats(mean, "--mean"), _floats(std, "--std"), layout)
            with stage(f"reading calibration data {path}"):
                calib = CalibrationData.load(path, n=samples, seed=seed, preprocess=preprocess, tokenizer=tokenizer,
                                             seq_len=seq_len, input_names=[image_input])
        with stage(f"quantizing for {backend} ({precision}) and validating"):
            result = quantize(onnx_path, backend, calib, precision, output, config=config)
    console.print(f"wrote {result.path} ({backend}, {precision}): {result.bytes / 1e6:.2f} MB (fp32 {result.fp32_bytes / 1e6:.2f} MB), "
                  f"{result.seconds:.1f} s")
    for check in result.checks:
        console.print(f"  {check.name} {check.shape}: cosine {check.cosine:.5f} vs fp32, max abs diff {check.max_abs_diff:.3g}")
    if result.top1_agreement is not None:
        console.print(f"  top-1 agreement with fp32: {100 * result.top1_agreement:.1f}%")
    if json_path:
        write_text_atomic(json_path, json.dumps(result.to_dict(), indent=2, default=str))
    if min_cosine is not None and result.min_cosine < min_cosine:
        raise ConfigError(f"quantized model cosine {result.min_cosine:.4f} is below --min-cosine {min_cosine}",
                          hint="try --method entropy/percentile, --dynamic (ORT), or more calibration samples")


COMMANDS = [quantize_cmd]
