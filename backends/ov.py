"""OpenVINO backend: reads ONNX or IR (.xml+.bin), compiles for CPU (or GPU/NPU), latency/throughput hints.

Per-layer info comes from OpenVINO's performance counters; the exec type names the kernel that ran
(e.g. `brgemm_avx512_amx_sparse_I8` proves the sparse-weights path, `..._I8` without "sparse" does not).
"""
from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgeprune.backends.base import (Backend, Capabilities, HostFacts, HostView, LayerInfo, SparseLayer, TensorSpec,
                                     dense_rule)

if TYPE_CHECKING:  # a type only: backends never import targets (targets imports backends)
    from edgeprune.targets.schema import DeviceProfile

_HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
_PRECISION_HINT = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


def _spec(port) -> TensorSpec:
    """An OpenVINO port as a TensorSpec; a dynamic dim is named d<index>."""
    shape = tuple(d.get_length() if d.is_static else f"d{i}" for i, d in enumerate(port.get_partial_shape()))
    return TensorSpec(port.get_any_name(), shape, port.get_element_type().to_dtype().name)


class OpenVINOBackend(Backend):
    name = "openvino"
    package = "openvino"
    display = "OpenVINO"
    install_hint = "pip install 'edgeprune[openvino]'"
    aliases = ("ov",)
    artifact_suffixes = (".xml", ".onnx")
    capabilities = Capabilities(
        export_format="OpenVINO IR", artifact_suffix=".xml", companions=(".bin",),
        kernel_proof="performance counters: each node's exec type names its kernel "
                     "(brgemm_avx512_amx_sparse_I8 proves the sparse-weights path)",
        # INT8 ran 0.84x (slower) on an AVX2-only CPU and 2.64x with VNNI (quantize_avx2.md, quantize.md)
        precisions={"fp32": (), "int8": ("avx512_vnni", "avx_vnni", "amx_int8"), "bf16": ("amx_bf16", "avx512_bf16"),
                    "fp16": ("avx512_fp16", "amx_fp16")},
        patterns={"channel": "dense kernels on smaller shapes",
                  "nm": "memory-only: CPU sparse weights decompression (INT8 weights, AMX)",
                  "block": "memory-only: CPU sparse weights decompression (INT8 weights, AMX)",
                  "unstructured": "memory-only: CPU sparse weights decompression (INT8 weights, AMX)"},
        int8_config="edgeprune.quantize.ov:int8_config",
        quantizers={"int8": "edgeprune.quantize.ov:int8_artifact", "fp16": "edgeprune.quantize.ov:fp16_artifact"},
        auto_candidates=(("int8", "NNCF INT8", ""),
                         ("int8", "NNCF INT8, input end float", "edgeprune.quantize.ov:input_end_float_config"),
                         ("fp16", "FP16 IR", "")),
        times_on_cpu=True, quantized_suffix=".xml", devices=("cpu", "gpu", "npu"))

    @classmethod
    def sparse_constraints(cls) -> tuple[str, ...]:
        return ("INT8 model, MatMul/FullyConnected only", "CPU with Intel AMX", "input and output channels % 64",
                "zero fraction above CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE", "memory-bandwidth gain, not skipped math")

    @classmethod
    def sparse_default(cls, layer: SparseLayer) -> tuple[str, str]:
        return "memory-only", "OpenVINO CPU sparse weights decompression (INT8, AMX): any zero pattern"

    @classmethod
    def sparse_failures(cls, layer: SparseLayer, host: HostFacts, verdict: str) -> list[str]:
        fails = []
        if not host.amx:
            fails.append("no AMX on this CPU (amx_tile absent from /proc/cpuinfo): sparse weights decompression unavailable")
        if layer.precision != "int8":
            fails.append(f"weights are {layer.precision}; sparse weights decompression needs an INT8 (Q/DQ) model")
        if layer.op.startswith("Conv") and not layer.op.startswith("Conv1D"):
            fails.append("Conv is not FullyConnected/MatMul")
        if layer.out_ch % 64 or layer.k % 64:
            fails.append(f"IC={layer.k}, OC={layer.out_ch} not both multiples of 64")
        if layer.sparsity <= layer.sparse_rate:
            fails.append(f"zero fraction {layer.sparsity:.0%} not above the decompression rate {layer.sparse_rate:.0%}")
        return fails

    @classmethod
    def gpu_build(cls, version: str, dist: str) -> bool:
        return False  # its GPU plugin is Intel's, not the NVIDIA GPU the probe reads

    @classmethod
    def probe_patterns(cls, host: HostView) -> dict[str, Any]:
        if not {"amx_tile", "amx_int8"} <= host.flags:
            return dense_rule("no AMX on this CPU: OpenVINO sparse weights decompression needs Intel AMX",
                              f"{host.source}: no amx_tile/amx_int8 flag; HARDWARE.md §3 [S16]")
        rule = {"accelerated": "memory-only", "precisions": ["int8"], "devices": ["cpu"],
                "min_channels_multiple": 64, "min_sparsity": 0.5, "requires": ["amx_tile", "amx_int8"],
                "reason": "OpenVINO CPU sparse weights decompression (AMX): saves memory traffic, no skipped math",
                "conditions": ["INT8 MatMul/FullyConnected only", "IC and OC multiple of 64",
                               "set CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE before compile_model"],
                "source": f"{host.source}: amx flags; HARDWARE.md §3 [S16]", "confidence": "D"}
        return {"nm": rule, "block": rule, "unstructured": rule}

    @classmethod
    def why_unavailable(cls) -> str | None:
        if importlib.util.find_spec("openvino") is None:
            return "the openvino package is not installed (pip install 'edgeprune[openvino]' or pip install openvino)"
        return None

    converts_onnx = True

    @classmethod
    def convert_onnx(cls, onnx_path, out_path) -> str:
        """ONNX -> IR (.xml + .bin) with fp32 weights: compression to fp16 is a precision choice, made elsewhere."""
        from edgeprune.errors import ExportError

        cls.require()
        import openvino as ov

        try:
            ov_model = ov.convert_model(str(onnx_path))
        except Exception as err:  # the converter's own message: an unsupported op, a bad graph
            raise ExportError(f"OpenVINO could not convert {onnx_path}: {type(err).__name__}: {err}") from err
        ov.save_model(ov_model, str(out_path), compress_to_fp16=False)
        return "openvino.convert_model"

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

    def _load(self, model_path: Any, profile: DeviceProfile | None) -> None:
        self._path = os.fspath(model_path)
        self.compiled = self._compile()
        self.request = self.compiled.create_infer_request()

    def input_specs(self) -> list[TensorSpec]:
        return [_spec(port) for port in self.compiled.inputs]

    def output_specs(self) -> list[TensorSpec]:
        return [_spec(port) for port in self.compiled.outputs]

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
