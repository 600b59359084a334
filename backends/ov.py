"""OpenVINO backend: reads ONNX or IR (.xml+.bin), compiles for CPU (or GPU/NPU), latency/throughput hints.

Per-layer info comes from OpenVINO's performance counters; the exec type names the kernel that ran
(e.g. `brgemm_avx512_amx_sparse_I8` proves the sparse-weights path, `..._I8` without "sparse" does not).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping

import numpy as np

from edgeprune.backends.base import Backend, LayerInfo, TensorSpec

_HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
_PRECISION_HINT = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


class OpenVINOBackend(Backend):
    name = "openvino"
    package = "openvino"
    artifact_suffixes = (".xml", ".onnx")

    @classmethod
    def why_unavailable(cls) -> str | None:
        if importlib.util.find_spec("openvino") is None:
            return "the openvino package is not installed (pip install 'edgeprune[openvino]' or pip install openvino)"
        return None

    def config(self, perf_count: bool = False) -> dict[str, Any]:
        opts = self.options
        cfg: dict[str, Any] = {"PERFORMANCE_HINT": _HINTS.get(opts.hint, "LATENCY")}
        if opts.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(opts.threads)
        if opts.nstreams:
            cfg["NUM_STREAMS"] = str(opts.nstreams)
        # Without this hint OpenVINO silently runs bf16 on AMX CPUs: fp32 artifacts must run fp32,
        # or every accuracy comparison would measure OpenVINO's downcast, not our model.
        if opts.precision in _PRECISION_HINT and self._device() == "CPU":
            cfg["INFERENCE_PRECISION_HINT"] = _PRECISION_HINT[opts.precision]
        if opts.sparse_weights and self._device() == "CPU":
            cfg["CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"] = float(dict(opts.extra).get("sparse_rate", 0.5))
        if perf_count:
            cfg["PERF_COUNT"] = True
        cfg.update(dict(opts.extra).get("ov_config", {}))
        return cfg

    def _device(self) -> str:
        return {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}.get(self.options.device.lower(), self.options.device.upper())

    def _compile(self, perf_count: bool = False):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(self._path)
        return core.compile_model(model, self._device(), self.config(perf_count))

    def _load(self, model_path: Any, profile: Any) -> None:
        self._path = os.fspath(model_path)
        self.compiled = self._compile()
        self.request = self.compiled.create_infer_request()

    def input_specs(self) -> list[TensorSpec]:
        specs = []
        for port in self.compiled.inputs:
            shape = tuple(d.get_length() if d.is_static else f"d{i}" for i, d in enumerate(port.get_partial_shape()))
            specs.append(TensorSpec(port.get_any_name(), shape, port.get_element_type().to_dtype().name))
        return specs

    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer(dict(inputs))
        return [np.array(result[out]) for out in self.compiled.outputs]

    def runner(self, inputs: Mapping[str, np.ndarray]):
        import openvino as ov

        # Bind input tensors once; the timed call is then only infer() on the bound request.
        for name, arr in inputs.items():
            self.request.set_tensor(name, ov.Tensor(np.ascontiguousarray(arr)))
        infer = self.request.infer
        return lambda: infer()

    def inspect(self, inputs: Mapping[str, np.ndarray] | None = None, runs: int = 10) -> list[LayerInfo]:
        """Per-layer performance counters (mean ms over `runs`), exec type and whether it was sparse."""
        compiled = self._compile(perf_count=True)
        request = compiled.create_infer_request()
        feeds = self.prepare_inputs(inputs)
        totals: dict[str, list] = {}
        for _ in range(runs):
            request.infer(feeds)
            for info in request.get_profiling_info():
                row = totals.setdefault(info.node_name, [info.node_type, info.exec_type, 0.0, str(info.status)])
                row[2] += info.real_time.total_seconds() * 1000.0
        layers = [
            LayerInfo(name=n, op_type=t, exec_type=e, time_ms=ms / runs, sparse="sparse" in e.lower(), extra={"status": s})
            for n, (t, e, ms, s) in totals.items()
        ]
        return sorted(layers, key=lambda l: -(l.time_ms or 0))
