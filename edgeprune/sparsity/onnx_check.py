"""Re-check a sparsity pattern in a saved ONNX file (fp32, fp16 or Q/DQ int8) — the file, not the module.

What the exporters really write (torch 2.13 dynamo, checked): a Linear on 2-D input becomes
Gemm(transB=1) with the (out, in) weight; on 3-D input a MatMul whose initializer is the
*pre-transposed* (in, out) weight (the transpose is folded), so N:M groups run along axis 0 there.
FP16 conversion keeps initializer names and layout; Q/DQ puts an int8 initializer behind a
DequantizeLinear. A stored value is "zero" when it equals the zero point (0 for symmetric int8).
Each weight is brought to the matrix view (out, K) before the pattern check.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from edgeprune.backends.trt_onnx import onnx_constants as graph_constants
from edgeprune.errors import ConfigError
from edgeprune.sparsity.patterns import PatternCheck, SparsityPattern, parse_pattern, to_matrix


@dataclasses.dataclass(frozen=True)
class OnnxWeight:
    initializer: str
    node: str
    op: str  # MatMul | Gemm | Conv
    stored_shape: tuple[int, ...]
    stored_dtype: str  # float32 | float16 | int8 | uint8
    layout: str  # how the stored tensor maps to (out, K)
    quantized: bool
    check: PatternCheck
    layer: str | None = None  # the torch layer this weight came from (matched by shape and zeros)
    zeros_preserved: bool | None = None  # every zero of the torch weight is a zero in the file

    @property
    def ok(self) -> bool:
        return self.check.ok and self.zeros_preserved is not False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["check"] = self.check.to_dict()
        return d


@dataclasses.dataclass
class OnnxPatternReport:
    path: str
    pattern: str
    weights: list[OnnxWeight]
    missing: list[str] = dataclasses.field(default_factory=list)  # sparsified torch layers not found in the file

    @property
    def ok(self) -> bool:
        return bool(self.weights) and not self.missing and all(w.ok for w in self.weights)

    @property
    def sparsity(self) -> float:
        total = sum(int(np.prod(w.check.shape)) for w in self.weights)
        return sum(w.check.sparsity * int(np.prod(w.check.shape)) for w in self.weights) / total if total else 0.0

    def failures(self) -> list[OnnxWeight]:
        return [w for w in self.weights if not w.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "pattern": self.pattern, "ok": self.ok, "sparsity": self.sparsity,
                "missing": self.missing, "weights": [w.to_dict() for w in self.weights]}


def _attrs(node) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _resolve(name: str, inits: Mapping[str, np.ndarray], producers: Mapping[str, Any]):
    """Follow a weight input back to its initializer: through Transpose / Cast / Identity / DequantizeLinear.

    Returns (initializer name, array, zero-point array or None, transposed?, quantized?) or None when
    the input is not a constant (an activation).
    """
    transposed, zero_point, quantized = False, None, False
    for _ in range(8):
        if name in inits:
            return name, inits[name], zero_point, transposed, quantized
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type in ("Cast", "Identity"):
            name = node.input[0]
        elif node.op_type == "Transpose":
            perm = _attrs(node).get("perm")
            if perm is not None and list(perm) != [1, 0]:
                return None
            transposed = not transposed
            name = node.input[0]
        elif node.op_type == "DequantizeLinear":
            quantized = True
            if len(node.input) > 2 and node.input[2] in inits:
                zp = inits[node.input[2]]
                axis = _attrs(node).get("axis", 1)
                zero_point = (zp, axis)
            name = node.input[0]
        else:
            return None
    return None


def _nonzero_matrix(arr: np.ndarray, zero_point) -> np.ndarray:
    """Float array with 0 exactly where the stored value represents 0.0."""
    if zero_point is None:
        return arr.astype(np.float32)
    zp, axis = zero_point
    if zp.ndim == 1 and arr.ndim > 1:  # per-channel zero point along `axis`
        shape = [1] * arr.ndim
        shape[axis] = zp.shape[0]
        zp = zp.reshape(shape)
    return (arr.astype(np.int32) != zp.astype(np.int32)).astype(np.float32)


def weight_matrices(path: str | os.PathLike, min_elements: int = 16) -> Iterable[tuple[Any, str, np.ndarray, str, bool, np.ndarray]]:
    """Yield (node, initializer name, matrix (out, K) with 0 where the weight is zero, layout, quantized, stored array)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ONNX file not found: {path}", hint="check the path")
    model = onnx.load(str(path))
    graph = model.graph
    inits = graph_constants(graph)  # initializers and Constant-node outputs, by tensor name
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv") or len(node.input) < 2:
            continue
        found = _resolve(node.input[1], inits, producers)
        if found is None:
            continue
        name, arr, zp, transposed, quantized = found
        if arr.size < min_elements or arr.ndim < 2:
            continue
        mat = _nonzero_matrix(arr, zp)
        if transposed:
            mat = mat.T
        if node.op_type == "MatMul":
            if mat.ndim != 2:
                continue
            layout, mat = "MatMul (in, out): transposed, groups along axis 0", mat.T
        elif node.op_type == "Gemm":
            if _attrs(node).get("transB", 0):
                layout = "Gemm transB=1 (out, in)"
            else:
                layout, mat = "Gemm transB=0 (in, out): transposed", mat.T
        else:
            import torch

            if _attrs(node).get("group", 1) != 1:
                continue  # grouped convs are never sparsified (see calib.unsupported_reason)
            layout = "Conv (out, C_in, kh, kw): groups along C_in per kernel position"
            mat = to_matrix(torch.from_numpy(np.ascontiguousarray(mat))).numpy()
        if transposed:
            layout += " (behind a Transpose)"
        yield node, name, np.ascontiguousarray(mat), layout, quantized, arr


def _sparsified_layers(model, pattern: SparsityPattern, layers: Iterable[str] | None) -> dict[str, np.ndarray]:
    """name -> zero mask (out, K) of the torch layers that carry the pattern (or only those named)."""
    from edgeprune.sparsity.apply import weight_matrix
    from edgeprune.weights import is_hf_conv1d
    from edgeprune.sparsity.calib import target_layers

    wanted = set(layers) if layers is not None else None
    mods = dict(target_layers(model))
    mods.update({n: m for n, m in model.named_modules() if is_hf_conv1d(m)})
    out = {}
    for name, mod in mods.items():
        mat = weight_matrix(mod).float()
        if (wanted is None and pattern.check(mat).ok and float((mat == 0).float().mean()) > 0) or (wanted and name in wanted):
            out[name] = (mat == 0).numpy()
    return out


def check_onnx(path: str | os.PathLike, pattern: str | SparsityPattern, *, model=None, layers: Iterable[str] | None = None,
               min_elements: int = 16) -> OnnxPatternReport:
    """Check the pattern in every constant MatMul/Gemm/Conv weight of the file.

    With `model` (the sparsified torch module), only the weights that come from its sparsified layers
    (`layers`, or every Linear/Conv that carries the pattern) are checked; each is matched to its layer by
    shape and zero set, `zeros_preserved` is filled, and sparsified layers absent from the file are `missing`.
    """
    import torch

    pat = parse_pattern(pattern)
    zero_masks = _sparsified_layers(model, pat, layers) if model is not None else None
    weights, matched = [], set()
    for node, name, mat, layout, quantized, arr in weight_matrices(path, min_elements):
        layer, preserved = None, None
        if zero_masks is not None:
            file_zero = mat == 0
            for lname, zmask in zero_masks.items():
                if lname not in matched and zmask.shape == file_zero.shape and bool(file_zero[zmask].all()):
                    # int8 rounding may add zeros; fp32/fp16 must have exactly the same zeros
                    if quantized or bool((file_zero == zmask).all()):
                        layer, preserved = lname, True
                        break
            if layer is None:
                continue  # a weight we did not sparsify (e.g. an ignored layer, MultiheadAttention.in_proj)
            matched.add(layer)
        # int8 rounding may add zeros inside kept blocks: only whole zero blocks matter then
        check = pat.check(torch.from_numpy(mat), strict=not quantized)
        weights.append(OnnxWeight(name, node.name, node.op_type, tuple(arr.shape), str(arr.dtype), layout, quantized, check,
                                  layer, preserved))
    expected = set(zero_masks or ()) | (set(layers) if layers is not None and model is not None else set())
    missing = sorted(expected - matched)
    return OnnxPatternReport(str(path), pat.name, weights, missing)


def tensorrt_eligibility(path: str | os.PathLike):
    """The TensorRT backend's own 2:4 eligibility check of the file, or None where that backend is absent."""
    try:
        from edgeprune.backends.trt import check_sparse_eligibility
    except ImportError:
        return None
    return check_sparse_eligibility(path)


# -- fp16 and Q/DQ variants of an exported file ------------------------------------------


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """FP16 weights and compute with fp32 inputs/outputs: the quantizer's own conversion (edgeprune.quantize.ort)."""
    from edgeprune.quantize.ort import to_fp16

    to_fp16(src, dst)
    return Path(dst)


# Symmetric per-channel int8 weights keep 0.0 exactly 0 (the pattern survives); uint8 activations; no
# pre-processing or range reduction, so the graph the pattern check reads is the exported one.
PATTERN_KEEPING_QDQ = dict(mode="static", model_type="generic", per_channel=True, activation_type="uint8",
                           weight_type="int8", weight_symmetric=True, reduce_range=False, preprocess=False)


def quantize_qdq(src: str | os.PathLike, dst: str | os.PathLike, feeds: list[dict[str, np.ndarray]]) -> Path:
    """Static Q/DQ int8 calibrated on `feeds`, through the ONNX Runtime quantizer (edgeprune.quantize.ort)."""
    from edgeprune.data import as_data
    from edgeprune.quantize.ort import OrtQuantConfig, quantize_ort

    config = OrtQuantConfig(**PATTERN_KEEPING_QDQ, batch_size=len(next(iter(feeds[0].values()))))
    quantize_ort(src, dst, as_data(feeds), config)
    return Path(dst)


__all__ = ["OnnxWeight", "OnnxPatternReport", "check_onnx", "weight_matrices", "tensorrt_eligibility", "convert_fp16", "quantize_qdq"]
