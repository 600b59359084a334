"""ONNX Runtime INT8: static QDQ (calibrated, per-channel weights) or dynamic (weights only ahead of time).

Static: ORT's pre-processing (symbolic shape inference + graph optimisation) first, because the
quantizer needs shapes on every tensor and fuses better on an optimised graph; then quantize_static
with QDQ nodes. Dynamic: activations are quantized per call at run time, no calibration, usually the
safer choice for transformers whose activation ranges vary per input (outliers after LayerNorm/GELU).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from edgeprune._io import atomic_path
from edgeprune.errors import ConfigError, ExportError

METHODS = ("minmax", "entropy", "percentile")
MODES = ("static", "dynamic")


@dataclasses.dataclass(frozen=True)
class OrtQuantConfig:
    mode: str = "static"  # static (QDQ, calibrated) | dynamic (weights int8, activations per call)
    method: str = "minmax"  # calibration: minmax | entropy | percentile
    per_channel: bool = True  # per-output-channel weight scales: the main accuracy lever for conv/linear
    activation_type: str = "uint8"  # uint8 (ORT CPU's fast U8S8 kernels) | int8 (symmetric back ends)
    weight_type: str = "int8"
    activation_symmetric: bool = False
    weight_symmetric: bool = True  # symmetric weights keep 0 -> 0 exactly: pruned patterns survive
    # 7-bit weights. ORT's x86 int8 kernels without VNNI use VPMADDUBSW, whose int16 pair sums saturate
    # with full 8-bit weights (measured here on AVX2: small-CNN cosine 0.9985 -> 0.99997 with 7 bits).
    # None = decide from this host's CPU flags (the ORT artifact normally runs where it was made).
    reduce_range: bool | None = None
    op_types: tuple[str, ...] | None = None  # None = every op ORT can quantize
    nodes_to_exclude: tuple[str, ...] = ()
    preprocess: bool = True  # onnxruntime.quantization.shape_inference.quant_pre_process
    quantize_bias: bool = True
    keep_removable_activations: bool = False
    batch_size: int | None = None  # calibration batch; None = the model's static batch, else 8
    extra_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"ORT quantization mode '{self.mode}' is unknown", hint=f"use one of {', '.join(MODES)}")
        if self.method not in METHODS:
            raise ConfigError(f"calibration method '{self.method}' is unknown", hint=f"use one of {', '.join(METHODS)}")
        for field in ("activation_type", "weight_type"):
            if getattr(self, field) not in ("int8", "uint8"):
                raise ConfigError(f"{field} '{getattr(self, field)}' is not int8/uint8", hint="use int8 or uint8")


@contextlib.contextmanager
def _quiet():
    """ORT's quantizer logs every node at INFO and prints progress; keep the user's terminal clean."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def host_has_int8_dot() -> bool | None:
    """True if this x86 CPU has VNNI/AMX int8 dot products, False if not, None off x86/Linux (unknown)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    if "avx2" not in flags:
        return None
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def resolve_reduce_range(config: OrtQuantConfig) -> tuple[bool, str]:
    if config.reduce_range is not None:
        return config.reduce_range, "set"
    dot = host_has_int8_dot()
    if dot is False:
        return True, "auto: this x86 CPU has no VNNI/AMX (VPMADDUBSW saturates with 8-bit weights)"
    return False, "auto: int8 dot-product CPU (or not x86)"


def preprocess(onnx_in: Path, onnx_out: Path) -> str:
    """quant_pre_process, falling back to ONNX-only shape inference when symbolic inference fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet():
            quant_pre_process(str(onnx_in), str(onnx_out), skip_symbolic_shape=False)
        return "symbolic shape inference + optimisation"
    except Exception as first:  # symbolic inference raises many types on exotic ops; retry without it
        try:
            with _quiet():
                quant_pre_process(str(onnx_in), str(onnx_out), skip_symbolic_shape=True)
            return f"onnx shape inference + optimisation (symbolic failed: {type(first).__name__})"
        except Exception as err:
            raise ExportError(f"ORT quantization pre-processing failed on {onnx_in.name}: {type(err).__name__}: {err}",
                              hint="check the model runs on onnxruntime, or pass preprocess=False") from err


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if name == "int8" else QuantType.QUInt8


def calibration_batch(onnx_path: Path, config: OrtQuantConfig) -> int:
    from edgeprune.calibration import onnx_input_specs

    lead = [s.shape[0] for s in onnx_input_specs(onnx_path) if s.shape]
    static = [d for d in lead if isinstance(d, int) and d > 0]
    return static[0] if static else (config.batch_size or 8)


def quantize_ort(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike, calib=None,
                 config: OrtQuantConfig = OrtQuantConfig()) -> dict[str, Any]:
    """Write an INT8 ONNX model; returns what was done (for the report)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_dynamic, quantize_static

    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    reduce_range, why = resolve_reduce_range(config)
    info: dict[str, Any] = {"mode": config.mode, "per_channel": config.per_channel, "reduce_range": reduce_range,
                            "reduce_range_reason": why}
    with tempfile.TemporaryDirectory(prefix="edgeprune-q-") as tmp:
        src = onnx_in
        if config.preprocess:
            src = Path(tmp) / "pre.onnx"
            info["preprocess"] = preprocess(onnx_in, src)
        op_types = list(config.op_types) if config.op_types else None
        with atomic_path(onnx_out, suffix=".onnx") as out, _quiet():
            if config.mode == "dynamic":
                quantize_dynamic(str(src), str(out), per_channel=config.per_channel, reduce_range=reduce_range,
                                 weight_type=_qtype(config.weight_type), op_types_to_quantize=op_types,
                                 nodes_to_exclude=list(config.nodes_to_exclude) or None,
                                 extra_options={"WeightSymmetric": config.weight_symmetric, **dict(config.extra_options)})
            else:
                if calib is None:
                    raise ConfigError("static INT8 quantization needs calibration data", hint="pass --calib, or use mode=dynamic")
                from edgeprune.calibration import CalibrationData

                batch = calibration_batch(src, config)
                data = CalibrationData.load(calib).bind(src)
                batch = min(batch, len(data)) if not _static_batch(src) else batch
                reader = data.as_onnx_reader(batch_size=batch)
                info.update(method=config.method, calibration_samples=len(data), calibration_batches=len(reader))
                method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                          "percentile": CalibrationMethod.Percentile}[config.method]
                extra = {"ActivationSymmetric": config.activation_symmetric, "WeightSymmetric": config.weight_symmetric,
                         "QuantizeBias": config.quantize_bias,
                         "QDQKeepRemovableActivations": config.keep_removable_activations,
                         **dict(config.extra_options)}
                quantize_static(str(src), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                                reduce_range=reduce_range, activation_type=_qtype(config.activation_type),
                                weight_type=_qtype(config.weight_type), calibrate_method=method,
                                op_types_to_quantize=op_types, nodes_to_exclude=list(config.nodes_to_exclude) or None,
                                extra_options=extra)
    info["quantized_nodes"] = count_qdq(onnx_out)
    return info


def _static_batch(onnx_path: Path) -> bool:
    from edgeprune.calibration import onnx_input_specs

    return any(s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0 for s in onnx_input_specs(onnx_path))


def count_qdq(path: Path) -> dict[str, int]:
    """How many quantization ops the model holds (0 everywhere = nothing was quantized)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearMatMul",
           "QLinearConv", "DynamicQuantizeMatMul")
    counts = {op: 0 for op in ops}
    for node in model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return {k: v for k, v in counts.items() if v}


def to_fp16(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike) -> dict[str, Any]:
    """FP16 weights and math with FP32 inputs/outputs (keep_io_types): callers feed the same arrays."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(onnx_in))
    with _quiet():
        half = convert_float_to_float16(model, keep_io_types=True)
    with atomic_path(onnx_out, suffix=".onnx") as out:
        onnx.save(half, str(out))
    return {"mode": "fp16", "keep_io_types": True}
