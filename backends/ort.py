"""ONNX Runtime backend: CPU EP by default, CUDA / TensorRT EPs when present.

Per-layer info comes from ORT's own profiler (node kernel times and the EP that ran each node).
ORT's CPU EP has no sparse GEMM: pruned zeros run dense, which `inspect` cannot show as sparse.
"""
from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgeprune.backends.base import Backend, Capabilities, HostView, LayerInfo, SparseLayer, TensorSpec, dense_rule

if TYPE_CHECKING:  # a type only: backends never import targets (targets imports backends)
    from edgeprune.targets.schema import DeviceProfile

_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
ORT_TO_NUMPY = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(int64)": "int64",
    "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}


def _spec(arg) -> TensorSpec:
    """An ORT NodeArg as a TensorSpec (a symbolic dim keeps its name)."""
    return TensorSpec(arg.name, tuple(d if isinstance(d, int) else str(d) for d in arg.shape), ORT_TO_NUMPY.get(arg.type, "float32"))


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    package = "onnxruntime"
    display = "ONNX Runtime"
    aliases = ("ort",)
    artifact_suffixes = (".onnx",)
    capabilities = Capabilities(
        export_format="ONNX", artifact_suffix=".onnx",
        kernel_proof="ORT profiler: each node's kernel time and the execution provider that ran it",
        # dynamic/static INT8 paid on x86 even without VNNI (MLAS u8s8 kernels; benchmarks/results/quantize_avx2.md);
        # FP16 only on a GPU execution provider (the CPU EP runs fp16 nodes through casts)
        precisions={"fp32": (), "int8": (), "fp16": ("sm_53",)},
        patterns={"channel": "dense kernels on smaller shapes",
                  "nm": "no sparse kernel: MatMul/Gemm/Conv run dense, zeros are multiplied",
                  "block": "no sparse kernel: MatMul/Gemm/Conv run dense, zeros are multiplied",
                  "unstructured": "no sparse kernel: MatMul/Gemm/Conv run dense, zeros are multiplied"},
        int8_config="edgeprune.quantize.ort:int8_config",
        quantizers={"int8": "edgeprune.quantize.ort:int8_artifact", "fp16": "edgeprune.quantize.ort:fp16_artifact"},
        auto_candidates=(("int8", "dynamic INT8", "edgeprune.quantize.ort:dynamic_config"),
                         ("int8", "static QDQ INT8", "edgeprune.quantize.ort:static_config"),
                         ("int8", "static QDQ INT8, input end float", "edgeprune.quantize.ort:input_end_float_config"),
                         ("fp16", "FP16", "")),
        times_on_cpu=True, devices=("cpu", "gpu"),
        dists=("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"))

    @classmethod
    def sparse_default(cls, layer: SparseLayer) -> tuple[str, str]:
        return "no", "ONNX Runtime CPU densifies weights: MatMul/Gemm/Conv run dense, zeros are multiplied"

    @classmethod
    def gpu_build(cls, version: str, dist: str) -> bool:
        return dist == "onnxruntime-gpu"

    @classmethod
    def probe_patterns(cls, host: HostView) -> dict[str, Any]:
        return dense_rule("ONNX Runtime CPU EP has no sparse-GEMM path: zeros are multiplied", "HARDWARE.md §4 (treat as no)",
                          "unconfirmed")

    @classmethod
    def why_unavailable(cls) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "the onnxruntime package is not installed (pip install onnxruntime)"
        return None

    def _providers(self) -> list[Any]:
        import onnxruntime as ort

        have = ort.get_available_providers()
        device = self.options.device
        if device == "cpu":
            return ["CPUExecutionProvider"]
        if device in ("cuda", "gpu") and "CUDAExecutionProvider" in have:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device in ("tensorrt", "trt") and "TensorrtExecutionProvider" in have:
            trt_opts = {"trt_fp16_enable": self.options.precision == "fp16",
                        "trt_int8_enable": self.options.precision == "int8",
                        "trt_sparsity_enable": self.options.sparse_weights, "trt_detailed_build_log": True}
            return [("TensorrtExecutionProvider", trt_opts), "CUDAExecutionProvider", "CPUExecutionProvider"]
        from edgeprune.errors import BackendUnavailable

        raise BackendUnavailable(
            f"onnxruntime has no execution provider for device '{device}' here (available: {have})",
            hint="use --device cpu, or install onnxruntime-gpu on a CUDA machine",
        )

    def _session_options(self, profile_prefix: str | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[self.options.graph_optimization])
        if self.options.threads:
            so.intra_op_num_threads = self.options.threads
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        for key, value in dict(self.options.extra).get("session_config", {}).items():
            so.add_session_config_entry(key, str(value))
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        return so

    def _load(self, model_path: Any, profile: DeviceProfile | None) -> None:
        import onnxruntime as ort

        self._path = os.fspath(model_path)
        self.session = ort.InferenceSession(self._path, sess_options=self._session_options(), providers=self._providers())
        self._output_names = [o.name for o in self.session.get_outputs()]

    def input_specs(self) -> list[TensorSpec]:
        return [_spec(i) for i in self.session.get_inputs()]

    def output_specs(self) -> list[TensorSpec]:
        return [_spec(o) for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self._output_names, dict(inputs))

    def runner(self, inputs: Mapping[str, np.ndarray]):
        feeds, names, run = dict(inputs), self._output_names, self.session.run
        return lambda: run(names, feeds)

    def inspect(self, inputs: Mapping[str, np.ndarray] | None = None, runs: int = 10) -> list[LayerInfo]:
        """Per-node mean kernel time (ms) and the EP that ran it, from ORT's profiler."""
        import onnxruntime as ort

        feeds = self.prepare_inputs(inputs)
        with tempfile.TemporaryDirectory() as tmp:
            sess = ort.InferenceSession(self._path, sess_options=self._session_options(os.path.join(tmp, "ort")),
                                        providers=self._providers())
            for _ in range(runs):
                sess.run(None, feeds)
            with open(sess.end_profiling(), encoding="utf-8") as f:
                events = json.load(f)
        return _node_table(events, runs)


def _node_table(events: list[dict], runs: int) -> list[LayerInfo]:
    totals: dict[str, float] = defaultdict(float)
    meta: dict[str, tuple[str, str]] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        node = ev["name"][: -len("_kernel_time")]
        args = ev.get("args", {})
        totals[node] += ev.get("dur", 0) / 1000.0  # µs -> ms
        meta[node] = (args.get("op_name", ""), args.get("provider", ""))
    return [
        LayerInfo(name=n, op_type=meta[n][0], exec_type=meta[n][1], time_ms=t / runs,
                  sparse=False if meta[n][1] == "CPUExecutionProvider" else None)  # CPU EP: no sparse GEMM
        for n, t in sorted(totals.items(), key=lambda kv: -kv[1])
    ]
