"""INT8 / FP16 artifacts per runtime, validated against the FP32 model on the runtime that will run them.

    result = quantize("minilm", "openvino", "lines.txt", output="minilm_int8.xml")
    result = quantize(model, "onnxruntime", CalibrationData.load("photos/"), output="m_int8.onnx")
    print(result.min_cosine, result.top1_agreement)

backend: any registered backend whose Capabilities name quantizers (ONNX Runtime: static QDQ or dynamic;
OpenVINO: NNCF PTQ / accuracy control, IR; TensorRT: symmetric Q/DQ ONNX the device builds its engine from).
The quantized artifact is always run once on a runtime here (the backend's own, or the one its capabilities
name) and compared with the FP32 ONNX on the default runtime: what is returned has been executed, not written.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from edgeprune import backends
from edgeprune.errors import ConfigError
from edgeprune.quantize.job import QuantJob

if TYPE_CHECKING:
    from edgeprune.targets.schema import DeviceProfile

# what any registered backend can quantize to: the keys of its Capabilities.quantizers ("int8", "fp16")
PRECISIONS = tuple(dict.fromkeys(p for cls in backends.backend_classes() for p in cls.capabilities.quantizers))
# ISA flags (as /proc/cpuinfo or a profile spells them) with int8 dot-product instructions.
INT8_ISA = {"avx512_vnni", "avx_vnni", "avx512vnni", "vnni", "amx_int8", "amx-int8", "amx", "dotprod", "asimddp", "i8mm", "sdot"}


@dataclasses.dataclass
class QuantizeResult:
    path: Path
    backend: str
    precision: str
    seconds: float
    checks: list  # export.OutputCheck per output, quantized vs FP32
    top1_agreement: float | None  # share of samples whose argmax matches FP32 (classifier-like outputs only)
    fp32_bytes: int
    bytes: int
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def min_cosine(self) -> float:
        return min((c.cosine for c in self.checks), default=1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "backend": self.backend, "precision": self.precision, "seconds": round(self.seconds, 2),
                "min_cosine": self.min_cosine, "top1_agreement": self.top1_agreement, "fp32_bytes": self.fp32_bytes,
                "bytes": self.bytes, "outputs": [dataclasses.asdict(c) for c in self.checks], "details": self.details}


def default_precision(profile: DeviceProfile) -> str:
    """int8 for NPUs and for CPUs with int8 dot-product ISA (VNNI/AMX, Arm dotprod/i8mm); fp16 for GPUs.

    A CPU without int8 dot products gets fp32 here: INT8 still shrinks the model but the speedup is not
    guaranteed, so it is opt-in.
    """
    kind = profile.kind.lower()
    offered = [str(p).lower() for p in profile.precisions]
    isa = {str(f).lower() for f in profile.isa_features}
    if kind in ("npu", "dla", "tpu", "accelerator") or (kind == "cpu" and isa & INT8_ISA):
        want = "int8"
    elif kind == "gpu":
        want = "fp16"
    else:
        want = "fp32"
    if offered and want not in offered:
        for alt in ("int8", "fp16", "bf16", "fp32"):  # the profile knows better: take its fastest precision
            if alt in offered:
                return alt
    return want


def quantizable() -> list[str]:
    """Backends that declare at least one quantizer."""
    from edgeprune.backends import backend_classes

    return [cls.name for cls in backend_classes() if cls.capabilities.quantizers]


def check_request(backend: str, precision: str) -> str:
    """The canonical backend name; a ConfigError for a backend without quantizers or a precision it lacks."""
    from edgeprune.backends import canonical, get_backend_class
    from edgeprune.quantize.job import quantizer

    name = canonical(backend)
    if name not in quantizable():
        raise ConfigError(f"cannot quantize for backend '{backend}'", hint=f"use one of {', '.join(quantizable())}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}", hint=f"use {' or '.join(PRECISIONS)}")
    quantizer(get_backend_class(name), precision)
    return name


def to_onnx(model: Any, workdir: Path, calib=None, input_shapes: Sequence[str] | None = None) -> tuple[Path, Any]:
    """An FP32 ONNX file for `model` (spec, LoadedModel, nn.Module, or .onnx path) and the LoadedModel (or None)."""
    import torch

    from edgeprune.exporter import export
    from edgeprune.models import LoadedModel, load_model

    if isinstance(model, (str, Path)) and str(model).endswith(".onnx"):
        if not Path(model).is_file():
            from edgeprune.errors import ModelLoadError

            raise ModelLoadError(f"ONNX file not found: {model}", hint="check the path")
        return Path(model), None
    if isinstance(model, torch.nn.Module):
        if calib is None:
            raise ConfigError("quantizing an nn.Module needs calibration data (its first sample is the export example)",
                              hint="pass calib=, or export to ONNX first")
        from edgeprune.data import as_data

        data = as_data(calib)
        model = LoadedModel("module", "module", model.eval(), tuple(data.batches(1)[0]), data.names)
    elif not isinstance(model, LoadedModel):
        model = load_model(str(model), input_shapes)
    path = workdir / "fp32.onnx"
    export(model, None, path)
    return path, model


def quantize(model: Any, backend: str, calib: Any = None, precision: str = "int8", output: str | Path | None = None, *,
             config: Any = None, input_shapes: Sequence[str] | None = None, validate: bool = True, n_validate: int = 16,
             evaluate: Callable[[Any, Iterable[Any]], float] | None = None, eval_data: Iterable[Any] | None = None,
             tokenizer: Any = None, seq_len: int | None = None, validate_data: Any = None) -> QuantizeResult:
    """Quantize `model` for `backend` at `precision`, write `output`, and validate it (see module doc).

    calib / validate_data: anything edgeprune.data.as_data takes. The artifact is validated on validate_data
    (all of it: held-out samples, refused when they overlap calib) or else on the first n_validate calibration samples.
    """
    from edgeprune.data import as_data, check_disjoint, onnx_input_specs

    from edgeprune.backends import capabilities

    backend = check_request(backend, precision)
    caps = capabilities(backend)
    suffix = caps.quantized_suffix
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeprune-quantize-") as tmp:
        work = Path(tmp)
        calib = _as_data(calib, model, tokenizer, seq_len)
        held_out = _as_data(validate_data, model, tokenizer, seq_len)
        onnx_path, _ = to_onnx(model, work, calib, input_shapes)
        if calib is not None:
            calib = calib.bind(onnx_input_specs(onnx_path))
        if held_out is not None:
            held_out = held_out.bind(onnx_input_specs(onnx_path))
            check_disjoint(held_out, calib=calib)
        output = Path(output) if output else onnx_path.with_name(f"{onnx_path.stem}_{precision}{suffix}")
        if output.suffix != suffix:
            raise ConfigError(f"output {output} must end in {suffix} for backend {backend}", hint=f"e.g. -o model_{precision}{suffix}")
        details = _run(backend, precision, QuantJob(onnx_path, output, calib, config, evaluate, eval_data))
        seconds = time.perf_counter() - t0
        checks, top1 = [], None
        if validate:
            feeds = held_out if held_out is not None else calib.head(n_validate) if calib is not None else None
            checks, top1 = validate_artifact(onnx_path, output, backend, feeds)
            if held_out is not None:
                details["validated_on"] = {"source": held_out.source, "samples": len(held_out)}
        fp32_bytes = onnx_path.stat().st_size
    size = sum(f.stat().st_size for f in [output, *(output.with_suffix(c) for c in caps.companions)] if f.exists())
    return QuantizeResult(output, backend, precision, seconds, checks, top1, fp32_bytes, size, details)


def _as_data(data: Any, model: Any, tokenizer: Any, seq_len: int | None):
    """CalibrationData from `data` (None stays None); text files take the model's tokenizer when none is given."""
    from edgeprune.data import as_data
    from edgeprune.models import tokenizer_source

    if data is None:
        return None
    options = {}
    if isinstance(data, (str, Path)) and Path(data).suffix.lower() in (".txt", ".csv"):
        if tokenizer is None and isinstance(model, (str, Path)):
            tokenizer = tokenizer_source(model)  # the packaged minilm, a HF folder, or an .onnx beside its tokenizer
        options = {"tokenizer": tokenizer, "seq_len": seq_len or 128}
    return as_data(data, **options)


def _run(backend: str, precision: str, job: "QuantJob") -> dict[str, Any]:
    from edgeprune.backends import get_backend_class
    from edgeprune.quantize.job import quantizer

    return quantizer(get_backend_class(backend), precision)(job)


def validate_artifact(fp32_onnx: Path, artifact: Path, backend: str, calib=None) -> tuple[list, float | None]:
    """Run the artifact on its CPU runtime and compare with the FP32 ONNX on ORT: per-output checks + top-1 agreement."""
    from edgeprune.backends import DEFAULT, BackendOptions, capabilities, get_backend
    from edgeprune.exporter import compare_outputs

    ref = get_backend(DEFAULT).compile(fp32_onnx)
    caps = capabilities(backend)
    runtime = caps.validates_quantized_on or backend
    # A Q/DQ artifact for a GPU runtime runs here unfused (DQ -> float op -> Q): the exact int8 semantics the
    # device executes with int32 accumulation. ORT's fused x86 int8 kernels without VNNI saturate on signed
    # activations and would blame the model for a CPU kernel artefact (measured: cosine 0.94 fused vs 0.99997 unfused).
    opt = "disable" if caps.unfused_validation else "all"
    cand = get_backend(runtime, BackendOptions(precision="fp32", graph_optimization=opt)).compile(artifact)
    specs = ref.input_specs()
    static = isinstance(specs[0].shape[0], int) and specs[0].shape[0] > 0 if specs and specs[0].shape else False
    feeds = calib.feeds(batch_size=specs[0].shape[0] if static else 1) if calib is not None else [ref.prepare_inputs(None)]
    ref_out, got_out = [], []
    for feed in feeds:
        ref_out.append(ref.run(feed))
        got_out.append(cand.run(cand.prepare_inputs(feed)))
    ref_cat = [np.concatenate([r[i] for r in ref_out]) for i in range(len(ref_out[0]))]
    got_cat = [np.concatenate([g[i] for g in got_out]) for i in range(len(got_out[0]))]
    # A loose tolerance: int8 is expected to differ; cosine and top-1 are the verdicts, not max abs diff.
    checks = compare_outputs(ref_cat, got_cat, [o.name for o in ref.session.get_outputs()], atol=1.0)
    top1 = None
    if ref_cat and ref_cat[0].ndim == 2 and ref_cat[0].shape[1] > 1:
        top1 = float(np.mean(ref_cat[0].argmax(1) == got_cat[0].argmax(1)))
    return checks, top1


__all__ = ["quantize", "default_precision", "QuantizeResult", "validate_artifact", "quantizable", "PRECISIONS"]
