"""OpenVINO INT8 with NNCF: post-training quantization, its accuracy-controlled variant, weight compression.

The ONNX model is converted to an OpenVINO model in memory, quantized by NNCF, then saved as IR
(.xml + .bin) with ov.save_model. Transformers get model_type=TRANSFORMER: NNCF then keeps
LayerNorm/Softmax/GELU paths in float and uses SmoothQuant — the difference between a usable and a
broken INT8 BERT. NPU profiles get weight-only compression for transformers (the NPU computes in FP16
with 8-bit weights; activations of attention are the part that loses accuracy on it).

What runs where (OpenVINO 2026.4 CPU plugin, AVX2 host without VNNI, checked with
compiled.get_runtime_model() layer precisions): MiniLM INT8 IR runs its 36 linear layers as u8/i8
FullyConnected (jit_gemm_I8) and 6 of 12 attention MatMuls in i8; INFERENCE_PRECISION_HINT=f32 does not
change that (it only governs float layers). Without VNNI those int8 GEMMs are slower than the f32 brgemm
kernels, hence INT8 slower than FP32 on such CPUs: default_precision() keeps them at fp32. EfficientNet
convs run u8 jit_avx2_I8.
CNN defaults (measured on EfficientNet-Lite0, 200 held-out crops, agreement / logit cosine vs FP32):
  * overflow fix on every layer on x86 without VNNI/AMX: their u8*s8 kernels (VPMADDUBSW) saturate int16
    with 8-bit weights; NNCF's default fixes only the first layer (0.69 / 0.90 -> 0.755 / 0.953);
  * full BiasCorrection instead of the fast variant (-> 0.78 / 0.972);
  * depthwise convs (GroupConvolution) left in float: per-channel 3x3 weights folded with BatchNorm lose the
    most, and they are memory-bound anyway (-> 0.825 / 0.977).
  * input end float (float_ends, the second `--precision auto` candidate): the first 1/8 of the
    Convolution/GroupConvolution/MatMul ops and the last one (the classifier) also stay float. EfficientNet-Lite0,
    32 calibration views, 128 crops of 8 unseen photos, f32 hint: top-1 agreement 83.6 at 1.94x -> 100.0 at 1.67x.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from edgeprune._io import atomic_path, quiet
from edgeprune.errors import BackendUnavailable, ConfigError, ExportError, NotApplicable
from edgeprune.quantize.job import check_float_ends, input_end

WEIGHT_MODES = ("int8_asym", "int8_sym", "int4_sym", "int4_asym")


@dataclasses.dataclass(frozen=True)
class OvQuantConfig:
    model_type: str = "auto"  # auto (detect from the graph) | transformer | cnn
    preset: str | None = None  # performance | mixed; None = NNCF's default (mixed for transformers)
    subset_size: int = 300  # NNCF caps calibration at this many samples (we pass at most len(calib))
    fast_bias_correction: bool | None = None  # None = fast for transformers, full BiasCorrection for CNNs
    overflow_fix: str | None = None  # enable | first_layer | disable; None = enable for CNNs on x86 without VNNI/AMX (module doc)
    float_depthwise: bool | None = None  # None = True for CNNs: GroupConvolution stays float
    ignored_types: tuple[str, ...] = ()  # OpenVINO op types left in float
    ignored_names: tuple[str, ...] = ()
    weight_compression: str | None = None  # int8_asym | int8_sym | int4_sym | int4_asym: weights only, no calibration of activations
    max_drop: float | None = None  # with an evaluation function: nncf.quantize_with_accuracy_control
    float_ends: float = 0.0  # CNNs: this fraction of the weighted ops nearest the input, and the last, stay float

    def __post_init__(self):
        if self.model_type not in ("auto", "transformer", "cnn"):
            raise ConfigError(f"model_type '{self.model_type}' is unknown", hint="use auto, transformer or cnn")
        if self.preset not in (None, "performance", "mixed"):
            raise ConfigError(f"NNCF preset '{self.preset}' is unknown", hint="use performance or mixed")
        if self.weight_compression not in (None, *WEIGHT_MODES):
            raise ConfigError(f"weight compression '{self.weight_compression}' is unknown", hint=f"use one of {', '.join(WEIGHT_MODES)}")
        if self.overflow_fix not in (None, "enable", "first_layer", "disable"):
            raise ConfigError(f"overflow fix '{self.overflow_fix}' is unknown", hint="use enable, first_layer or disable")
        check_float_ends(self.float_ends)
        if self.max_drop is not None and not 0 <= self.max_drop < 1:
            raise ConfigError(f"max_drop {self.max_drop} is outside [0, 1)", hint="e.g. 0.01 for one point of accuracy")


def require_nncf() -> None:
    import importlib.util

    from edgeprune.backends.ov import OpenVINOBackend

    if importlib.util.find_spec(OpenVINOBackend.package) is None:
        raise BackendUnavailable(f"OpenVINO INT8 needs {OpenVINOBackend.package}", hint=OpenVINOBackend.how_to_install())
    if importlib.util.find_spec("nncf") is None:
        raise BackendUnavailable("OpenVINO INT8 needs NNCF", hint="pip install nncf")


def is_transformer(ov_model) -> bool:
    """Softmax next to MatMuls with integer inputs, or any attention op: NNCF's transformer scheme applies."""
    types = {op.get_type_name() for op in ov_model.get_ops()}
    int_inputs = any(p.get_element_type().is_integral() for p in ov_model.inputs)
    return "ScaledDotProductAttention" in types or ("Softmax" in types and "MatMul" in types and (int_inputs or "MVN" in types))


def read_model(source: str | os.PathLike):
    import openvino as ov

    try:
        return ov.Core().read_model(str(source)) if str(source).endswith(".xml") else ov.convert_model(str(source))
    except Exception as err:  # the converter raises its own exception types
        raise ExportError(f"OpenVINO could not read {source}: {type(err).__name__}: {err}") from err


def quantize_ov(source: str | os.PathLike, xml_out: str | os.PathLike, calib=None, config: OvQuantConfig = OvQuantConfig(), *,
                evaluate: Callable[[Any, Iterable[Any]], float] | None = None, eval_data: Iterable[Any] | None = None) -> dict[str, Any]:
    """Quantize an ONNX/IR model with NNCF and save INT8 IR at `xml_out` (.bin beside it).

    With config.max_drop and `evaluate(compiled_model, eval_data) -> metric`, NNCF's accuracy control reverts
    the most harmful layers to float until the metric drops at most max_drop (absolute); eval_data items are
    (inputs, target) pairs."""
    require_nncf()
    import nncf

    model = read_model(source)
    transformer = config.model_type == "transformer" or (config.model_type == "auto" and is_transformer(model))
    info: dict[str, Any] = {"tool": f"nncf {nncf.__version__}", "model_type": "transformer" if transformer else "cnn"}
    if config.float_ends > 0:
        if transformer:
            raise NotApplicable("the input-end-float INT8 variant is for CNNs; this graph reads as transformer")
        ends = float_end_ops(model, config.float_ends)
        config = dataclasses.replace(config, ignored_names=tuple(config.ignored_names) + tuple(ends))
        info["float_end_nodes"] = len(ends)
    ignored_types, ignored = _ignored(nncf, config, transformer)
    if config.weight_compression:
        mode = nncf.CompressWeightsMode(config.weight_compression)
        kwargs = {"ratio": 1.0, "group_size": -1} if mode.value.startswith("int4") else {}
        with quiet("nncf", stderr=True):
            model = nncf.compress_weights(model, mode=mode, ignored_scope=ignored, **kwargs)
        info.update(method="weight compression", weight_mode=mode.value)
        return _save(model, xml_out, info)
    if calib is None:
        raise ConfigError("OpenVINO INT8 quantization needs calibration data", hint="pass --calib, or use weight compression")
    from edgeprune.data import InputSpec, as_data

    specs = [InputSpec(p.get_any_name(), tuple(d.get_length() if d.is_static else None for d in p.get_partial_shape()),
                       p.get_element_type().to_dtype().name) for p in model.inputs]
    data = as_data(calib).bind(specs)
    static_batch = specs[0].shape[0] if specs and isinstance(specs[0].shape[0], int) else 1
    feeds = data.feeds(batch_size=static_batch)
    kwargs = _ptq_options(nncf, config, transformer, ignored, len(feeds))
    info.update(calibration_samples=len(data), subset_size=kwargs["subset_size"],
                fast_bias_correction=kwargs["fast_bias_correction"], overflow_fix=_overflow_fix(config, transformer)
                or "nncf default", float_types=ignored_types)
    model = _run_nncf(nncf, model, nncf.Dataset(feeds), kwargs, config, evaluate, eval_data, info)
    return _save(model, xml_out, info)


def _ignored(nncf, config: OvQuantConfig, transformer: bool):
    """(op types kept float, NNCF IgnoredScope or None): CNNs keep GroupConvolution (depthwise) float by default."""
    types = list(config.ignored_types)
    if not transformer and config.float_depthwise is not False and "GroupConvolution" not in types:
        types.append("GroupConvolution")
    if not (types or config.ignored_names):
        return types, None
    return types, nncf.IgnoredScope(types=types, names=list(config.ignored_names), validate=False)


def _ptq_options(nncf, config: OvQuantConfig, transformer: bool, ignored, n_feeds: int) -> dict[str, Any]:
    """nncf.quantize keyword arguments: subset size, bias correction, overflow fix, model type and preset."""
    fast_bc = transformer if config.fast_bias_correction is None else config.fast_bias_correction
    kwargs: dict[str, Any] = {"subset_size": min(config.subset_size, n_feeds), "fast_bias_correction": fast_bc,
                              "ignored_scope": ignored}
    overflow = _overflow_fix(config, transformer)
    if overflow:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        fix = {"enable": OverflowFix.ENABLE, "first_layer": OverflowFix.FIRST_LAYER, "disable": OverflowFix.DISABLE}[overflow]
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(overflow_fix=fix)
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if config.preset:
        kwargs["preset"] = nncf.QuantizationPreset(config.preset)
    return kwargs


def _run_nncf(nncf, model, dataset, kwargs: dict[str, Any], config: OvQuantConfig, evaluate, eval_data, info: dict):
    """nncf.quantize, or quantize_with_accuracy_control when an evaluation function and max_drop are given."""
    try:
        with quiet("nncf", stderr=True):
            if evaluate is None or config.max_drop is None:
                info["method"] = "nncf.quantize (PTQ)"
                return nncf.quantize(model, dataset, **kwargs)
            if eval_data is None:
                raise ConfigError("accuracy control needs evaluation data", hint="pass eval_data= with the evaluation function")
            # items are (inputs, target): `evaluate` sees them whole, NNCF's own ranking runs feed only inputs
            validation = nncf.Dataset(list(eval_data), _inputs_of)
            if "advanced_parameters" in kwargs:  # the accuracy-control API names it differently
                kwargs["advanced_quantization_parameters"] = kwargs.pop("advanced_parameters")
            info.update(method="nncf.quantize_with_accuracy_control", max_drop=config.max_drop)
            return nncf.quantize_with_accuracy_control(model, dataset, validation, evaluate, max_drop=config.max_drop,
                                                       drop_type=nncf.DropType.ABSOLUTE, **kwargs)
    except (ConfigError, ExportError):
        raise
    except Exception as err:  # NNCF wraps runtime failures in many types; name the cause in one line
        raise ExportError(f"NNCF quantization failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                          hint="check the model compiles on OpenVINO; try model_type or ignored types") from err


def _overflow_fix(config: OvQuantConfig, transformer: bool) -> str | None:
    """CNNs: 7-bit weights on every layer where the CPU's int8 kernels would saturate; None = NNCF's own default.

    Transformers keep NNCF's default: MiniLM cosine 0.9959 with it, 0.9942 with the fix on every layer."""
    if config.overflow_fix is not None:
        return config.overflow_fix
    from edgeprune.quantize.ort import host_has_int8_dot

    return "enable" if not transformer and host_has_int8_dot() is False else None


def _inputs_of(item):
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise ConfigError("accuracy-control evaluation items must be (inputs, target) pairs",
                          hint="e.g. eval_data=[(image_batch, label), ...]")
    return item[0]


def to_fp16_ir(source: str | os.PathLike, xml_out: str | os.PathLike) -> dict[str, Any]:
    """FP16-compressed IR: weights stored as f16 (half the .bin); the device picks its own math precision."""
    model = read_model(source)
    return _save(model, xml_out, {"method": "ov.save_model(compress_to_fp16=True)"}, fp16=True)


def _save(model, xml_out: str | os.PathLike, info: dict[str, Any], fp16: bool = False) -> dict[str, Any]:
    import openvino as ov

    xml_out = Path(xml_out)
    if xml_out.suffix != ".xml":
        raise ConfigError(f"OpenVINO output {xml_out} must end in .xml", hint="e.g. -o model_int8.xml (the .bin goes beside it)")
    with atomic_path(xml_out, suffix=".xml") as tmp:
        ov.save_model(model, str(tmp), compress_to_fp16=fp16)
        os.replace(tmp.with_suffix(".bin"), xml_out.with_suffix(".bin"))
    info["fake_quantize_ops"] = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    return info


WEIGHTED_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")


def float_end_ops(model, fraction: float) -> list[str]:
    """Friendly names of the first ceil(fraction * n) weighted ops in execution order and of the last one."""
    weighted = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in WEIGHTED_OPS]
    return input_end(weighted, fraction)


def input_end_float_config() -> OvQuantConfig:
    """Capabilities.auto_candidates entry: NNCF INT8 with a CNN's first 1/8 of weighted ops and its classifier float
    (module doc); NotApplicable on transformers."""
    return OvQuantConfig(float_ends=0.125)


def int8_config(method: str, dynamic: bool, weights_only: str | None):
    """Capabilities.int8_config entry: the config `edgeprune quantize`'s options ask for."""
    return OvQuantConfig(weight_compression=weights_only)


def int8_artifact(job):
    """Capabilities.quantizers entry: NNCF INT8 IR, with accuracy control when the job has an evaluate function."""
    return quantize_ov(job.onnx_path, job.output, job.calib, job.config or OvQuantConfig(), evaluate=job.evaluate,
                       eval_data=job.eval_data)


def fp16_artifact(job):
    """Capabilities.quantizers entry: IR with FP16-compressed weights."""
    return to_fp16_ir(job.onnx_path, job.output)
