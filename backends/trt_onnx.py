"""What an ONNX file tells the TensorRT backend, read without `tensorrt`: 2:4 eligibility, precision, inputs.

`check_sparse_eligibility` re-checks TensorRT's 2:4 rule on the ONNX weights (HARDWARE.md §1c, TensorRT
Developer Guide "Structured Sparsity"): for each output channel and each kernel position, every group of 4
consecutive *input* channels holds >= 2 zeros, C % 4 == 0, constant weight. The input-channel axis per op
follows NVIDIA's own checker (Polygraphy `tools/sparse.py`, TensorRT 10.3): Conv weight (K, C, R, S) -> axis 1;
MatMul B (in, out) -> axis 0 (A, when constant, -> its last axis); Gemm B -> axis 1 if transB else 0.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgeprune.errors import ConfigError, ModelLoadError

SPARSE_OPS = ("Conv", "MatMul", "Gemm")  # layers whose constant weights TensorRT can run with 2:4 tactics
_PASS_THROUGH = ("Cast", "Identity", "QuantizeLinear", "DequantizeLinear")  # keep the input-channel axis

# -- 2:4 eligibility of the ONNX weights ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerSparsity:
    """One Conv/MatMul/Gemm node and whether its weight meets TensorRT's 2:4 rule."""

    name: str  # ONNX node name; TensorRT's ONNX parser names the layer after it
    op_type: str
    weight: str | None  # initializer name; None when the weight is not a constant
    shape: tuple[int, ...]  # stored shape of the initializer
    axis: int | None  # axis of the stored tensor holding the input channels (groups of 4 run along it)
    eligible: bool
    reason: str
    groups: int = 0  # groups of 4 input channels checked
    dense_groups: int = 0  # groups with fewer than 2 zeros
    zero_fraction: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _load_onnx(model: Any):
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(os.fspath(model))
    if not path.is_file():
        raise ModelLoadError(f"ONNX file not found: {path}", hint="check the path")
    try:
        return onnx.load(str(path))
    except Exception as err:  # protobuf DecodeError and friends: say which file
        raise ModelLoadError(f"{path} is not a readable ONNX file ({type(err).__name__}: {err})",
                             hint="re-export the model") from err


def _attrs(node) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def onnx_constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(a.t)
    return consts


def _trace(name: str, axis: int, consts: Mapping[str, np.ndarray], producers: Mapping[str, Any]):
    """Follow a weight input back to its constant through Cast/Identity/Q/DQ/Transpose.

    Returns (initializer name, array, zero point or None, input-channel axis of the array) or a reason string.
    """
    zero_point = None  # (array, axis) from a DequantizeLinear: the stored value meaning 0.0
    transposes: list[list[int] | None] = []
    for _ in range(16):
        if name in consts:
            arr = consts[name]
            if arr.ndim < 2:
                return f"weight '{name}' has rank {arr.ndim}"
            ax = axis % arr.ndim
            for perm in transposes:  # consumer side first: axis i of Transpose's output is axis perm[i] of its input
                ax = perm[ax] if perm is not None else arr.ndim - 1 - ax
            return name, arr, zero_point, ax
        node = producers.get(name)
        if node is None:
            return "weight is not a constant (a graph input / activation)"
        if node.op_type in _PASS_THROUGH:
            if node.op_type == "DequantizeLinear" and len(node.input) > 2 and node.input[2] in consts:
                zero_point = (consts[node.input[2]], int(_attrs(node).get("axis", 1)))
            elif node.op_type == "QuantizeLinear":
                zero_point = None  # its input is the float weight: 0.0 is zero there
        elif node.op_type == "Transpose":
            perm = _attrs(node).get("perm")
            transposes.append(list(perm) if perm is not None else None)
        else:
            return f"weight is computed by a {node.op_type} node, not a constant"
        name = node.input[0]
    return "weight is not a constant (chain of producers too long)"


def _zero_mask(arr: np.ndarray, zero_point) -> np.ndarray:
    if zero_point is None:
        return arr == 0
    zp, zp_axis = zero_point
    zp = np.asarray(zp)
    if zp.ndim == 1 and zp.size > 1:  # per-channel zero point along the DequantizeLinear axis
        shape = [1] * arr.ndim
        shape[zp_axis % arr.ndim] = zp.size
        zp = zp.reshape(shape)
    return arr.astype(np.int64) == zp.astype(np.int64)


def _check_weight(name: str, op: str, init: str, arr: np.ndarray, axis: int, zero_point) -> LayerSparsity:
    zero = _zero_mask(arr, zero_point)
    frac = float(zero.mean()) if zero.size else 0.0
    c = int(arr.shape[axis])
    shape = tuple(int(d) for d in arr.shape)
    if c % 4:
        return LayerSparsity(name, op, init, shape, axis, False,
                             f"C={c} input channels (axis {axis} of {shape}) is not a multiple of 4", 0, 0, frac)
    counts = np.moveaxis(zero, axis, -1).reshape(-1, c // 4, 4).sum(axis=-1)
    groups, dense = int(counts.size), int((counts < 2).sum())
    if dense:
        reason = f"{dense}/{groups} groups of 4 input channels (axis {axis} of {shape}) have fewer than 2 zeros"
    else:
        reason = f"all {groups} groups of 4 input channels (axis {axis} of {shape}) have >= 2 zeros"
    return LayerSparsity(name, op, init, shape, axis, dense == 0, reason, groups, dense, frac)


def check_sparse_eligibility(model: Any) -> list[LayerSparsity]:
    """Every Conv/MatMul/Gemm node of an ONNX file (or ModelProto) with TensorRT's 2:4 verdict on its weight."""
    model = _load_onnx(model)
    graph = model.graph
    consts = onnx_constants(graph)
    producers = {out: node for node in graph.node for out in node.output}
    out: list[LayerSparsity] = []
    for idx, node in enumerate(graph.node):
        if node.op_type not in SPARSE_OPS or len(node.input) < 2:
            continue
        name = node.name or f"{node.op_type}_{idx}"
        attrs = _attrs(node)
        if node.op_type == "Conv":
            candidates = [(node.input[1], 1)]
        elif node.op_type == "MatMul":
            candidates = [(node.input[1], -2), (node.input[0], -1)]
        else:  # Gemm: Y = A' B', B' = B^T when transB
            candidates = [(node.input[1], 1 if attrs.get("transB", 0) else 0),
                          (node.input[0], 0 if attrs.get("transA", 0) else 1)]
        found, why = None, ""
        for inp, axis in candidates:
            traced = _trace(inp, axis, consts, producers)
            if isinstance(traced, tuple):
                found = traced
                break
            why = why or traced
        if found is None:
            out.append(LayerSparsity(name, node.op_type, None, (), None, False, why))
            continue
        init, arr, zp, axis = found
        out.append(_check_weight(name, node.op_type, init, arr, axis, zp))
    return out


# -- what the ONNX says about precision and shapes -----------------------------------------


def onnx_precision(model: Any) -> str:
    """'int8' for Q/DQ models, 'fp16'/'bf16' when weights or inputs carry those types, else 'fp32'."""
    import onnx

    model = _load_onnx(model)
    graph = model.graph
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node):
        return "int8"
    types = {i.data_type for i in graph.initializer if len(i.dims) >= 2}
    types |= {i.type.tensor_type.elem_type for i in graph.input}
    if onnx.TensorProto.FLOAT16 in types:
        return "fp16"
    if onnx.TensorProto.BFLOAT16 in types:
        return "bf16"
    return "fp32"


def onnx_inputs(model: Any) -> list[tuple[str, tuple[int | str, ...]]]:
    """(name, dims) of the real inputs; a dynamic dim is its dim_param (or '?')."""
    model = _load_onnx(model)
    inits = {i.name for i in model.graph.initializer}
    out = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims: list[int | str] = []
        for d in inp.type.tensor_type.shape.dim:
            dims.append(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?"))
        out.append((inp.name, tuple(dims)))
    return out
