"""Validated export: torch -> ONNX (dynamo exporter) -> ONNX Runtime check; ONNX -> OpenVINO IR -> check.

Every export is run on the runtime against the PyTorch outputs. An output passes when
max|ref - got| <= atol * max(1, max|ref|): absolute for outputs of magnitude <= 1, relative above.
Any failing output raises ExportError listing every failing output (optimum-exporter style).
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from edgeprune._io import atomic_path, quiet
from edgeprune.backends import DEFAULT as DEFAULT_RUNTIME
from edgeprune.errors import ConfigError, ExportError

DEFAULT_OPSET = 18
DEFAULT_ATOL = 1e-4
REFERENCE = DEFAULT_RUNTIME  # every export is validated on the runtime that runs everywhere


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    cosine: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance

    def __str__(self) -> str:
        return f"{self.name} {self.shape}: max abs diff {self.max_abs_diff:.3g} (tol {self.tolerance:.3g}), cosine {self.cosine:.6f}"


@dataclasses.dataclass
class ExportReport:
    path: Path
    runtime: str
    exporter: str  # "dynamo" | "torchscript (fallback)" | "openvino.convert_model"
    opset: int | None
    checks: list[OutputCheck]
    seconds: float
    fallback_reason: str | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.checks), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "runtime": self.runtime, "exporter": self.exporter, "opset": self.opset,
                "seconds": round(self.seconds, 3), "fallback_reason": self.fallback_reason, "ok": self.ok,
                "outputs": [dict(dataclasses.asdict(c), ok=c.ok) for c in self.checks]}


def compare_outputs(reference: Sequence[np.ndarray], got: Sequence[np.ndarray], names: Sequence[str] | None = None,
                    atol: float = DEFAULT_ATOL) -> list[OutputCheck]:
    """Per-output max abs diff and cosine of `got` against `reference`."""
    if len(reference) != len(got):
        raise ExportError(f"the runtime returned {len(got)} outputs, the source model {len(reference)}",
                          hint="check the exported graph's outputs")
    names = list(names or []) + [f"output_{i}" for i in range(len(reference))]
    checks = []
    for name, ref, out in zip(names, reference, got):
        ref = np.asarray(ref, dtype=np.float64)
        out = np.asarray(out, dtype=np.float64)
        if ref.shape != out.shape:
            checks.append(OutputCheck(name, tuple(out.shape), float("inf"), float("nan"), atol))
            continue
        diff = float(np.max(np.abs(ref - out))) if ref.size else 0.0
        denom = float(np.linalg.norm(ref) * np.linalg.norm(out))
        # NaN anywhere makes denom NaN, and `NaN > 0` is False: that used to print cosine 1.0 beside diff nan
        finite = bool(np.isfinite(ref).all() and np.isfinite(out).all())
        cosine = (float(np.dot(ref.ravel(), out.ravel()) / denom) if denom > 0 else 1.0) if finite else float("nan")
        scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
        checks.append(OutputCheck(name, tuple(ref.shape), diff, cosine, atol * scale))
    return checks


def raise_on_mismatch(checks: Sequence[OutputCheck], what: str, reference: Sequence[np.ndarray] | None = None) -> None:
    bad = [c for c in checks if not c.ok]
    nonfinite = [c.name for c, r in zip(checks, reference or []) if not np.isfinite(r).all()]
    if bad and nonfinite:  # a larger --atol cannot fix NaN: say where it comes from
        raise ExportError(f"{what}: the PyTorch model's own output(s) {nonfinite} hold NaN/Inf on the example inputs",
                          hint="check the weights and inputs for NaN/Inf (load_model names the parameter) or an overflow")
    if bad:
        raise ExportError(f"{what} disagrees with the PyTorch model on {len(bad)} of {len(checks)} output(s): "
                          + "; ".join(str(c) for c in bad),
                          hint="raise --atol only if the difference is expected (e.g. fp16), else report the model")


def torch_outputs(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    from edgeprune.outputs import flatten_outputs

    with torch.inference_mode():
        out = model(*example_inputs)
    return as_numpy(flatten_outputs(out))


def as_numpy(tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """float32 numpy copies, as the runtimes' outputs are compared against them."""
    return [t.detach().float().cpu().numpy() for t in tensors]


def _dynamic_shapes(n_inputs: int, dynamic_batch: bool, dynamic_dims: dict[int, dict[int, str]] | None):
    """One dict per positional input: dim index -> torch.export.Dim (shared by name across inputs)."""
    if not dynamic_batch and not dynamic_dims:
        return None
    dims: dict[str, Any] = {}
    spec = []
    for i in range(n_inputs):
        entry = {}
        if dynamic_batch:
            entry[0] = dims.setdefault("batch", torch.export.Dim("batch", min=1, max=4096))
        for axis, label in (dynamic_dims or {}).get(i, {}).items():
            entry[axis] = dims.setdefault(label, torch.export.Dim(label, min=2, max=65536))
        spec.append(entry or None)
    return tuple(spec)


def _onnx_export(model, example_inputs, path: Path, opset: int, input_names, output_names, dynamic_shapes) -> tuple[str, str | None]:
    """Dynamo exporter first; the legacy TorchScript exporter only as a recorded fallback."""
    try:
        with quiet("torch"):
            program = torch.onnx.export(model, tuple(example_inputs), dynamo=True, opset_version=opset,
                                        input_names=input_names, output_names=output_names,
                                        dynamic_shapes=dynamic_shapes, verbose=False)
            program.save(str(path), external_data=False)
        return "dynamo", None
    except Exception as err:  # the dynamo exporter raises many types; any of them means "try the fallback"
        reason = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    dynamic_axes = None
    if dynamic_shapes:
        dynamic_axes = {n: {a: d.__name__ for a, d in (spec or {}).items()} for n, spec in zip(input_names, dynamic_shapes)}
    try:
        with quiet("torch"):
            torch.onnx.export(model, tuple(example_inputs), str(path), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes)
    except Exception as err:
        raise ExportError(f"ONNX export failed with both exporters: dynamo: {reason}; torchscript: {type(err).__name__}: {err}",
                          hint="check that the model runs under torch.export, or simplify the failing op") from err
    return "torchscript (fallback)", reason


def export(model, example_inputs: Sequence[torch.Tensor] | torch.Tensor, path: str | os.PathLike, *,
           opset: int = DEFAULT_OPSET, input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
           dynamic_batch: bool = False, dynamic_dims: dict[int, dict[int, str]] | None = None,
           validate: bool = True, atol: float = DEFAULT_ATOL, past_key_values: bool = False) -> ExportReport:
    """Export `model` to ONNX at `path` and check it on ONNX Runtime against PyTorch.

    `model` may be an nn.Module or a LoadedModel (then example_inputs/input_names come from it). Outputs that are
    ModelOutputs, dicts or hold None are flattened and named after their fields; a Hugging Face decoder is exported
    with use_cache=False unless past_key_values=True (then its present.{i}.key/value are outputs too).
    Raises ExportError listing every output outside tolerance; nothing is left at `path` then.
    """
    from edgeprune.models import LoadedModel

    if isinstance(model, LoadedModel):
        input_names = input_names or model.input_names
        example_inputs, model = model.example_inputs, model.module
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not 7 <= opset <= 23:
        raise ConfigError(f"opset {opset} is out of range", hint="use an opset between 7 and 23 (default 18)")
    model = model.eval()
    from edgeprune.finite import check_finite_entry

    check_finite_entry(model, example_inputs, where="export's model")
    names = list(input_names or [f"input_{i}" for i in range(len(example_inputs))])
    from edgeprune.outputs import for_export

    model, default_names, outputs = for_export(model, example_inputs, past_key_values)
    reference = as_numpy(outputs)  # the forward for_export already ran: the reference is not computed twice
    out_names = list(output_names or default_names)
    t0 = time.perf_counter()
    path = Path(path)
    with atomic_path(path, suffix=".onnx") as tmp:
        shapes = _dynamic_shapes(len(example_inputs), dynamic_batch, dynamic_dims)
        exporter, reason = _onnx_export(model, example_inputs, tmp, opset, names, out_names, shapes)
        checks = []
        if validate:
            feeds = {n: t.detach().cpu().numpy() for n, t in zip(names, example_inputs)}
            checks = compare_outputs(reference, run_reference(tmp, feeds), out_names, atol)
            raise_on_mismatch(checks, f"ONNX export {path.name} on {REFERENCE}", reference)
    return ExportReport(path, REFERENCE, exporter, opset, checks, time.perf_counter() - t0, reason)


def within_tables(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Random integer feeds folded into the rows of the table each one indexes (a graph input read by a Gather of an
    initializer: token ids into an embedding). The random feeds' ids (1000-2000) overrun a small vocabulary."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    rows = {init.name: init.dims[0] for init in model.graph.initializer if init.dims}
    bound: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in rows and node.input[1] in feeds:
            bound[node.input[1]] = min(bound.get(node.input[1], rows[node.input[0]]), rows[node.input[0]])
    return {k: (v % bound[k]).astype(v.dtype) if k in bound and v.dtype.kind in "iu" else v for k, v in feeds.items()}


def run_reference(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run an ONNX file on the reference runtime (backends.DEFAULT), with the feeds its graph takes."""
    from edgeprune.backends import get_backend

    backend = get_backend(REFERENCE).compile(path)
    known = {s.name for s in backend.input_specs()}
    return backend.run({k: v for k, v in feeds.items() if k in known})


def convert(onnx_path: str | os.PathLike, out_path: str | os.PathLike, runtime: str, *,
            reference: tuple[Sequence[np.ndarray], dict[str, np.ndarray]] | None = None,
            atol: float = DEFAULT_ATOL) -> ExportReport:
    """Convert an ONNX file into `runtime`'s own format (OpenVINO IR: .xml + .bin) and check it on that runtime.

    `reference` = (expected outputs, input feeds); without it the ONNX file on the reference runtime is the reference.
    Nothing is left at `out_path` (or its companions) unless the check passes.
    """
    from edgeprune.backends import BackendOptions, get_backend, get_backend_class

    cls = get_backend_class(runtime)
    if not cls.converts_onnx:
        raise ConfigError(f"{cls.label()} runs the ONNX file itself: there is nothing to convert to",
                          hint="use the .onnx export on it directly")
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    t0 = time.perf_counter()
    companions = cls.capabilities.companions
    with atomic_path(out_path, suffix=out_path.suffix) as tmp:
        try:
            tool = cls.convert_onnx(onnx_path, tmp)
            backend = get_backend(cls.name, BackendOptions(precision="fp32")).compile(tmp)
            expected, feeds = reference or (None, within_tables(onnx_path, backend.prepare_inputs(None)))
            if expected is None:
                expected = run_reference(onnx_path, feeds)
            checks = compare_outputs(expected, backend.run(feeds), backend.output_names(), atol)
            raise_on_mismatch(checks, f"{cls.capabilities.export_format} {out_path.name}")
            for suffix in companions:  # the .xml's .bin moves in before the .xml does (atomic_path's rename)
                os.replace(tmp.with_suffix(suffix), out_path.with_suffix(suffix))
        finally:
            for suffix in companions:
                tmp.with_suffix(suffix).unlink(missing_ok=True)
    return ExportReport(out_path, cls.name, tool, None, checks, time.perf_counter() - t0)
