"""Q/DQ ONNX for TensorRT's explicit quantization, produced and validated on CPU with ONNX Runtime.

TensorRT builds an INT8 engine from QuantizeLinear/DequantizeLinear pairs in the ONNX (TRT 11 is
strongly typed: precision comes from the graph, not builder flags). What TensorRT accepts:
  * symmetric quantization only: every zero point 0, signed int8 (activations and weights);
  * weights in [-127, 127] (ORT's symmetric int8 range) with per-output-channel scales;
  * no int32 DequantizeLinear: biases stay float (QuantizeBias=False), TRT fuses them itself;
  * Q/DQ on the inputs of weighted ops (Conv/MatMul/Gemm) — NVIDIA's recommended placement; other
    ops run in the engine's float precision.
Removable activations (Relu/Clip) are kept in the graph: TRT fuses them with the Q/DQ'd conv, and
removing them is only exact for asymmetric ranges. The engine build itself is the TensorRT backend's job.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from edgeprune.errors import ExportError
from edgeprune.quantize.ort import OrtQuantConfig, quantize_ort

WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclasses.dataclass(frozen=True)
class TrtQdqConfig:
    method: str = "minmax"  # minmax | entropy | percentile (NVIDIA's own PTQ tools default to max / entropy)
    per_channel: bool = True
    op_types: tuple[str, ...] = WEIGHTED_OPS
    nodes_to_exclude: tuple[str, ...] = ()
    preprocess: bool = True

    def ort_config(self) -> OrtQuantConfig:
        return OrtQuantConfig(mode="static", method=self.method, per_channel=self.per_channel, activation_type="int8",
                              weight_type="int8", activation_symmetric=True, weight_symmetric=True, reduce_range=False,
                              op_types=self.op_types, nodes_to_exclude=self.nodes_to_exclude, preprocess=self.preprocess,
                              quantize_bias=False, keep_removable_activations=True)


def quantize_trt(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike, calib, config: TrtQdqConfig = TrtQdqConfig()) -> dict[str, Any]:
    info = quantize_ort(onnx_in, onnx_out, calib, config.ort_config())
    info["tensorrt_check"] = check_trt_qdq(onnx_out)
    info["format"] = "QDQ int8 symmetric (TensorRT explicit quantization)"
    return info


def check_trt_qdq(path: str | os.PathLike) -> dict[str, int]:
    """Raise ExportError if the Q/DQ graph breaks a TensorRT rule; else counts of what was checked."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    problems: list[str] = []
    n_q = n_dq = n_weights = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        n_q += node.op_type == "QuantizeLinear"
        n_dq += node.op_type == "DequantizeLinear"
        if len(node.input) < 3 or node.input[2] not in inits:
            problems.append(f"{node.name}: no constant zero point")
            continue
        zp = inits[node.input[2]]
        if zp.data_type != onnx.TensorProto.INT8:
            problems.append(f"{node.name}: zero point type {onnx.TensorProto.DataType.Name(zp.data_type)}, TensorRT needs INT8")
        elif np.any(numpy_helper.to_array(zp) != 0):
            problems.append(f"{node.name}: non-zero zero point (TensorRT is symmetric only)")
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            w = numpy_helper.to_array(inits[node.input[0]])
            n_weights += 1
            if w.dtype == np.int8 and w.size and int(w.min()) < -127:
                problems.append(f"{node.name}: weight value -128 (TensorRT weights are in [-127, 127])")
    if problems:
        raise ExportError(f"{Path(path).name} is not a TensorRT-compatible Q/DQ model: " + "; ".join(problems[:5])
                          + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""),
                          hint="quantize with TrtQdqConfig, the TensorRT settings (symmetric int8, float bias)")
    return {"quantize_linear": n_q, "dequantize_linear": n_dq, "int8_weights": n_weights}


def int8_config(method: str, dynamic: bool, weights_only: str | None):
    """Capabilities.int8_config entry: the config `edgeprune quantize`'s options ask for."""
    return TrtQdqConfig(method=method)


def int8_artifact(job):
    """Capabilities.quantizers entry: symmetric Q/DQ ONNX that TensorRT builds an INT8 engine from."""
    return quantize_trt(job.onnx_path, job.output, job.calib, job.config or TrtQdqConfig())
