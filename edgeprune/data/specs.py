"""What a model's inputs look like (InputSpec), read from ONNX or torch example inputs, and the check that
fits data to them (`bind_arrays`, used by CalibrationData.bind)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np

from edgeprune.data.errors import CalibrationError

# ONNX TensorProto element type -> numpy dtype name
_ONNX_TO_NUMPY = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
                  11: "float64"}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a model input needs: name, shape (int = static, str/None = dynamic) and numpy dtype."""

    name: str
    shape: tuple[Any, ...]
    dtype: str

    def __str__(self) -> str:
        dims = ", ".join(str(d) if isinstance(d, int) and d > 0 else "N" if i == 0 else "?" for i, d in enumerate(self.shape))
        return f"{self.name} ({dims}) {self.dtype}"


def onnx_input_specs(path: str | os.PathLike) -> list[InputSpec]:
    """The graph inputs of an ONNX file (initializers excluded), without loading weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        specs.append(InputSpec(inp.name, dims, _ONNX_TO_NUMPY.get(t.elem_type, "float32")))
    return specs


def torch_input_specs(example_inputs: Sequence[Any], input_names: Sequence[str]) -> list[InputSpec]:
    """Specs of a torch model from its example inputs: dim 0 (the batch) free, every other dim as in the example."""
    specs = []
    for name, t in zip(input_names, example_inputs):
        dtype = str(t.dtype).replace("torch.", "")
        specs.append(InputSpec(name, (None, *tuple(int(d) for d in t.shape[1:])), "float32" if dtype == "bfloat16" else dtype))
    return specs


def as_specs(specs: Sequence[Any]) -> list[InputSpec]:
    """InputSpec from anything with name/shape/dtype (backends' TensorSpec, this module's InputSpec)."""
    return [s if isinstance(s, InputSpec) else InputSpec(s.name, tuple(s.shape), str(np.dtype(s.dtype))) for s in specs]


def bind_arrays(arrays: Mapping[str, np.ndarray], specs: Sequence[InputSpec], source: str) -> dict[str, np.ndarray]:
    """`arrays` renamed, ordered and cast like `specs` (see CalibrationData.bind for the rules)."""
    expected = "; ".join(str(s) for s in specs)
    if all(s.name in arrays for s in specs):
        picked = [arrays[s.name] for s in specs]
    elif len(specs) == len(arrays):
        picked = list(arrays.values())
    else:
        raise CalibrationError(f"calibration data from {source} holds inputs {list(arrays)}, the model expects {expected}",
                               hint="name the arrays like the model inputs (npz keys), or give one array per input")
    return {spec.name: _fit(arr, spec, source) for spec, arr in zip(specs, picked)}


def _fit(arr: np.ndarray, spec: InputSpec, source: str) -> np.ndarray:
    """One input checked against its spec: rank, static dims (dim 0 = samples is free), float/int kind."""
    got = f"{tuple(arr.shape[1:])} {arr.dtype} per sample"
    if arr.ndim != len(spec.shape):
        raise CalibrationError(f"{source}: calibration input '{spec.name}' has shape {tuple(arr.shape)} (rank {arr.ndim}, {got}); "
                               f"the model expects {spec} (rank {len(spec.shape)}, N = samples)",
                               hint="give samples stacked on dim 0 with the model's per-sample shape")
    for i, (have, want) in enumerate(zip(arr.shape[1:], spec.shape[1:]), start=1):
        if isinstance(want, int) and want > 0 and have != want:
            raise CalibrationError(f"{source}: calibration input '{spec.name}' is {got}, dim {i} is {have}; the model expects {spec}",
                                   hint="resize/crop images or set the sequence length to the model's static shape")
    want_kind, have_kind = np.dtype(spec.dtype).kind, arr.dtype.kind
    if want_kind != have_kind and not ({want_kind, have_kind} <= {"i", "u"}):
        raise CalibrationError(f"{source}: calibration input '{spec.name}' has dtype {arr.dtype}; the model expects {spec}",
                               hint="token ids must be integers, images/features floats")
    return arr.astype(spec.dtype, copy=False)


__all__ = ["InputSpec", "onnx_input_specs", "torch_input_specs", "as_specs", "bind_arrays"]
