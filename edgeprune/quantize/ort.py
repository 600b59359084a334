"""ONNX Runtime INT8: static QDQ (calibrated, per-channel weights) or dynamic (weights only ahead of time).

Static: ORT's pre-processing (symbolic shape inference + graph optimisation) first, because the
quantizer needs shapes on every tensor and fuses better on an optimised graph; then quantize_static
with QDQ nodes. Dynamic: activations are quantized per call at run time, no calibration, usually the
safer choice for transformers whose activation ranges vary per input (outliers after LayerNorm/GELU).

Defaults per model type (model_type="auto" reads the graph; measured on MiniLM-L6 and EfficientNet-Lite0,
numbers in benchmarks/results/quantize.md):
  transformer: only MatMul/Gemm get Q/DQ. Quantizing every op put a Q/DQ on the attention-mask Add, whose
    padding value is finfo(float32).min: scale 1e36, every attention score rounds to 0 (MiniLM cosine 0.29).
    The FFN down-projection (the MatMul fed by GELU) stays float: its input has outlier channels that one
    per-tensor uint8 scale cannot hold (cosine 0.93 with it quantized under any calibration method, 0.991 without).
  cnn: int8 weights, 7-bit (reduce_range) on x86 CPUs without VNNI to dodge VPMADDUBSW saturation. That
    costs depthwise-separable nets accuracy (EfficientNet-Lite0 top-1 agreement 0.75 vs 0.86 from weights
    alone). weight_type="uint8" keeps 8 bits without saturation (ORT's U8U8 kernels) but is opt-in: measured
    on this AVX2 EPYC, EfficientNet-Lite0 U8U8 ran 0.14x of FP32 (46.8 ms vs 6.8 ms), a 7x slowdown no
    accuracy gain pays for in a speed tool (benchmarks/results/quantize.md).
  transformer, dynamic: attention and GELU fused first by edgeprune (quantize/ort_fusion.py), so Q/K/V become one
    QAttention. ORT's own transformer optimizer (onnxruntime.transformers optimize_model, model_type="bert") finds
    no Attention or EmbedLayerNormalization in MiniLM-L6 as torch 2.13 exports it from transformers 5.25 (dynamo or
    TorchScript exporter; only Gelu/SkipLayerNormalization fuse): its output quantized ran 1.81x against plain
    dynamic INT8's 1.89x. With edgeprune's fusion (and LayerNorm written out): 2.62x (ort_fusion.py's doc).
  cnn, input end float (float_ends, the third `--precision auto` candidate): the layers nearest the input carry
    the least redundancy, and the classifier decides the top-1; keeping the first 1/8 of the Conv/Gemm/MatMul
    nodes and the last one in float is the accuracy-for-speed trade between all-INT8 and FP32. Measured on
    EfficientNet-Lite0 (static QDQ, 256 calibration views, top-1 agreement on 128 crops of 8 unseen photos):
    all INT8 73.4 at 2.59x; first conv + classifier float 82.8 at 2.30x; + the next 5 convs float 94.5 at 1.74x;
    keeping the 16 depthwise convs float instead made it worse (45.3).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from edgeprune._io import atomic_path, quiet
from edgeprune.errors import ConfigError, ExportError, NotApplicable
from edgeprune.quantize.job import check_float_ends, input_end

METHODS = ("minmax", "entropy", "percentile")
MODES = ("static", "dynamic")
MODEL_TYPES = ("auto", "transformer", "cnn", "generic")
# Ops that only move data: a MatMul's input is "fed by GELU" through any chain of these.
_SHAPE_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Identity"}
_GELU_OPS = {"Gelu", "FastGelu", "BiasGelu", "QuickGelu"}


@dataclasses.dataclass(frozen=True)
class OrtQuantConfig:
    mode: str = "static"  # static (QDQ, calibrated) | dynamic (weights int8, activations per call)
    model_type: str = "auto"  # auto (read the graph) | transformer | cnn | generic: picks the defaults in the module doc
    method: str = "minmax"  # calibration: minmax | entropy | percentile
    per_channel: bool = True  # per-output-channel weight scales: the main accuracy lever for conv/linear
    activation_type: str = "uint8"  # uint8 (ORT CPU's fast U8S8 kernels) | int8 (symmetric back ends)
    weight_type: str | None = None  # None = int8, or uint8 for CNNs on x86 CPUs without VNNI (see module doc)
    activation_symmetric: bool = False
    weight_symmetric: bool = True  # symmetric weights keep 0 -> 0 exactly: pruned patterns survive
    # 7-bit weights. ORT's x86 int8 kernels without VNNI use VPMADDUBSW, whose int16 pair sums saturate
    # with full 8-bit weights (measured here on AVX2: small-CNN cosine 0.9985 -> 0.99997 with 7 bits).
    # None = decide from this host's CPU flags (the ORT artifact normally runs where it was made).
    reduce_range: bool | None = None
    op_types: tuple[str, ...] | None = None  # None = by model type: MatMul/Gemm for transformers, else every op ORT can quantize
    nodes_to_exclude: tuple[str, ...] = ()  # added to the model type's own exclusions (transformers: GELU-fed MatMuls)
    exclude_gelu_matmuls: bool | None = None  # None = True for static transformers: FFN down-projections stay float
    preprocess: bool = True  # onnxruntime.quantization.shape_inference.quant_pre_process
    # dynamic mode on a transformer: fuse attention and GELU for ORT's CPU kernels first (quantize/ort_fusion.py)
    fuse: bool = True
    quantize_bias: bool = True
    keep_removable_activations: bool = False
    batch_size: int | None = None  # calibration batch; None = the model's static batch, else 8
    float_ends: float = 0.0  # CNNs: this fraction of the weighted nodes nearest the input, and the last, stay float
    extra_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"ORT quantization mode '{self.mode}' is unknown", hint=f"use one of {', '.join(MODES)}")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type '{self.model_type}' is unknown", hint=f"use one of {', '.join(MODEL_TYPES)}")
        if self.method not in METHODS:
            raise ConfigError(f"calibration method '{self.method}' is unknown", hint=f"use one of {', '.join(METHODS)}")
        check_float_ends(self.float_ends)
        for field in ("activation_type", "weight_type"):
            if getattr(self, field) not in ("int8", "uint8", None if field == "weight_type" else "int8"):
                raise ConfigError(f"{field} '{getattr(self, field)}' is not int8/uint8", hint="use int8 or uint8")


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


def model_kind(model) -> str:
    """transformer (Softmax + MatMul with LayerNorm/GELU or integer inputs), cnn (any Conv), else generic."""
    types = {n.op_type for n in model.graph.node}
    int_inputs = any(i.type.tensor_type.elem_type in (6, 7) for i in model.graph.input)  # int32 / int64 token ids
    if "Softmax" in types and "MatMul" in types and (int_inputs or types & ({"LayerNormalization", "Erf"} | _GELU_OPS)):
        return "transformer"
    return "cnn" if "Conv" in types else "generic"


def gelu_fed_matmuls(model) -> list[str]:
    """MatMul/Gemm nodes whose data input comes (through shape-only ops) from a GELU: the FFN down-projections."""
    producer = {out: node for node in model.graph.node for out in node.output}

    def is_gelu(node, depth: int = 0) -> bool:
        # exported erf-GELU is x * 0.5 * (1 + erf(x / sqrt 2)): a Mul with an Erf (or tanh form) a few ops up
        if node is None or depth > 4:
            return False
        if node.op_type in _GELU_OPS or node.op_type in ("Erf", "Tanh"):
            return True
        return node.op_type in ("Mul", "Add", "Div") and any(is_gelu(producer.get(i), depth + 1) for i in node.input)

    names = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        src = producer.get(node.input[0])
        while src is not None and src.op_type in _SHAPE_OPS:
            src = producer.get(src.input[0])
        if src is not None and src.op_type in ("Mul", *_GELU_OPS) and is_gelu(src):
            names.append(node.name)
    return names


def resolve(config: OrtQuantConfig, onnx_path: Path) -> tuple[OrtQuantConfig, dict[str, Any]]:
    """The config with its model-type defaults filled in (see module doc), and what was decided, for the report."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    kind = model_kind(model) if config.model_type == "auto" else config.model_type
    changes: dict[str, Any] = {}
    if kind == "transformer" and config.mode == "static" and config.op_types is None:
        changes["op_types"] = ("MatMul", "Gemm")
    # static only: quantize_dynamic rewrites the pre-processed Gemm nodes under new names, so an exclusion by name
    # never held there, and every dynamic INT8 figure on record quantizes the down-projections too
    exclude = config.exclude_gelu_matmuls if config.exclude_gelu_matmuls is not None else config.mode == "static"
    if kind == "transformer" and exclude:
        gelu = [n for n in gelu_fed_matmuls(model) if n not in config.nodes_to_exclude]
        if gelu:
            changes["nodes_to_exclude"] = tuple(config.nodes_to_exclude) + tuple(gelu)
    if config.float_ends > 0:
        ends = float_end_nodes(model, config.float_ends)
        changes["nodes_to_exclude"] = tuple(changes.get("nodes_to_exclude", config.nodes_to_exclude)) + tuple(ends)
    weight_type = config.weight_type or "int8"
    if weight_type == "uint8" and config.reduce_range is None:
        # asked for uint8: full 8 bits with asymmetric scales (U8U8 kernels do not saturate, but are slow on AVX2)
        changes.update(weight_symmetric=False, reduce_range=False)
    changes["weight_type"] = weight_type
    info = {"model_type": kind, "weight_type": weight_type}
    if "nodes_to_exclude" in changes:
        info["float_gelu_matmuls"] = len(changes["nodes_to_exclude"]) - len(config.nodes_to_exclude)
    if "op_types" in changes:
        info["op_types"] = list(changes["op_types"])
    if config.float_ends > 0:
        info["float_end_nodes"] = len(ends)
    return dataclasses.replace(config, **changes), info


WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def float_end_nodes(model, fraction: float) -> list[str]:
    """Names of the first ceil(fraction * n) weighted nodes in graph (topological) order and of the last one."""
    weighted = [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS]
    return input_end(weighted, fraction)


def check_applies(onnx_path: Path, config: OrtQuantConfig) -> None:
    """float_ends is for CNNs (on a transformer its first node is the embedding's MatMul, and MatMul-only static
    QDQ has its own defaults): NotApplicable otherwise, read before any pre-processing is paid for."""
    import onnx

    if config.float_ends > 0 and config.model_type in ("auto", "cnn"):
        kind = model_kind(onnx.load(str(onnx_path), load_external_data=False))
        if kind != "cnn":
            raise NotApplicable(f"the input-end-float INT8 variant is for CNNs; this graph reads as {kind}")


def preprocess(onnx_in: Path, onnx_out: Path) -> str:
    """quant_pre_process, falling back to ONNX-only shape inference when symbolic inference fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with quiet(""):
            quant_pre_process(str(onnx_in), str(onnx_out), skip_symbolic_shape=False)
        return "symbolic shape inference + optimisation"
    except Exception as first:  # symbolic inference raises many types on exotic ops; retry without it
        try:
            with quiet(""):
                quant_pre_process(str(onnx_in), str(onnx_out), skip_symbolic_shape=True)
            return f"onnx shape inference + optimisation (symbolic failed: {type(first).__name__})"
        except Exception as err:
            raise ExportError(f"ORT quantization pre-processing failed on {onnx_in.name}: {type(err).__name__}: {err}",
                              hint="check the model runs on ONNX Runtime, or pass preprocess=False") from err


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if name == "int8" else QuantType.QUInt8


def calibration_batch(onnx_path: Path, config: OrtQuantConfig) -> int:
    from edgeprune.data import onnx_input_specs

    lead = [s.shape[0] for s in onnx_input_specs(onnx_path) if s.shape]
    static = [d for d in lead if isinstance(d, int) and d > 0]
    return static[0] if static else (config.batch_size or 8)


def quantize_ort(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike, calib=None,
                 config: OrtQuantConfig = OrtQuantConfig()) -> dict[str, Any]:
    """Write an INT8 ONNX model; returns what was done (for the report)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_dynamic, quantize_static

    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    check_applies(onnx_in, config)
    info: dict[str, Any] = {"mode": config.mode, "per_channel": config.per_channel}
    with tempfile.TemporaryDirectory(prefix="edgeprune-q-") as tmp:
        src, config = _fused(onnx_in, Path(tmp) / "fused.onnx", config, info)
        if config.preprocess:
            src, pre = Path(tmp) / "pre.onnx", src
            info["preprocess"] = preprocess(pre, src)
        # node names are those of the pre-processed graph, which is what the quantizer sees
        config, decided = resolve(config, src)
        reduce_range, why = resolve_reduce_range(config)
        info.update(reduce_range=reduce_range, reduce_range_reason=why)
        info.update(decided)
        op_types = list(config.op_types) if config.op_types else None
        with atomic_path(onnx_out, suffix=".onnx") as out, quiet(""):
            if config.mode == "dynamic":
                quantize_dynamic(str(src), str(out), per_channel=config.per_channel, reduce_range=reduce_range,
                                 weight_type=_qtype(config.weight_type), op_types_to_quantize=op_types,
                                 nodes_to_exclude=list(config.nodes_to_exclude) or None,
                                 extra_options={"WeightSymmetric": config.weight_symmetric, **dict(config.extra_options)})
            else:
                if calib is None:
                    raise ConfigError("static INT8 quantization needs calibration data", hint="pass --calib, or use mode=dynamic")
                from edgeprune.data import as_data

                batch = calibration_batch(src, config)
                data = as_data(calib).bind(src)
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


def _fused(onnx_in: Path, fused: Path, config: OrtQuantConfig, info: dict[str, Any]) -> tuple[Path, OrtQuantConfig]:
    """The graph to quantize and its config: for dynamic INT8 on a transformer, the attention/GELU-fused graph when it
    matched and reproduced the original (ort_fusion.py; dynamic quantization turns Attention into QAttention), with
    model_type pinned to transformer (the fused graph has no Softmax left to read it from); else onnx_in.
    Static QDQ keeps the plain graph: QDQ has no quantized Attention, so fusing would leave Q/K/V in float."""
    import onnx

    from edgeprune.quantize.ort_fusion import fuse_encoder

    if not config.fuse or config.mode != "dynamic" or config.model_type not in ("auto", "transformer"):
        return onnx_in, config
    try:
        model = onnx.load(str(onnx_in))  # with its weights: the fusion rewrites this one copy
    except Exception:  # unreadable: pre-processing reports it, as for every other config
        return onnx_in, config
    if config.model_type == "auto" and model_kind(model) != "transformer":
        return onnx_in, config
    try:
        done = fuse_encoder(onnx_in, fused, model)
    except Exception as err:  # a speed pass: whatever breaks in it (a graph onnx cannot save), the plain graph ships
        done = {"kept": False, "reason": f"fusion failed: {type(err).__name__}: {str(err)[:200]}"}
    info["fused"] = done
    return (fused, dataclasses.replace(config, model_type="transformer")) if done["kept"] else (onnx_in, config)


def _static_batch(onnx_path: Path) -> bool:
    from edgeprune.data import onnx_input_specs

    return any(s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0 for s in onnx_input_specs(onnx_path))


def count_qdq(path: Path) -> dict[str, int]:
    """How many quantization ops the model holds (0 everywhere = nothing was quantized)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearMatMul",
           "QLinearConv", "DynamicQuantizeMatMul", "QAttention")
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
    with quiet(""):
        half = convert_float_to_float16(model, keep_io_types=True)
    with atomic_path(onnx_out, suffix=".onnx") as out:
        onnx.save(half, str(out))
    return {"mode": "fp16", "keep_io_types": True}


def int8_config(method: str, dynamic: bool, weights_only: str | None):
    """Capabilities.int8_config entry: the config `edgeprune quantize`'s options ask for."""
    return OrtQuantConfig(mode="dynamic" if dynamic else "static", method=method)


def int8_artifact(job):
    """Capabilities.quantizers entry: static QDQ (or dynamic) INT8 ONNX for ONNX Runtime."""
    return quantize_ort(job.onnx_path, job.output, job.calib, job.config or OrtQuantConfig())


def fp16_artifact(job):
    """Capabilities.quantizers entry: an FP16 ONNX (inputs and outputs stay FP32)."""
    return to_fp16(job.onnx_path, job.output)


def dynamic_config() -> OrtQuantConfig:
    """Capabilities.auto_candidates entry: dynamic INT8 (weights ahead of time, activations per call)."""
    return OrtQuantConfig(mode="dynamic")


def input_end_float_config() -> OrtQuantConfig:
    """Capabilities.auto_candidates entry: static QDQ with the first 1/8 of a CNN's weighted layers and its
    classifier in float (module doc); declined as NotApplicable on other models."""
    return OrtQuantConfig(mode="static", model_type="auto", float_ends=0.125)


def static_config() -> OrtQuantConfig:
    """Capabilities.auto_candidates entry: static QDQ with the model type's safe defaults (transformers: MatMul/Gemm
    only, GELU-fed MatMuls kept float; see the module doc)."""
    return OrtQuantConfig(mode="static", model_type="auto")
