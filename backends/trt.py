"""TensorRT backend (TensorRT >= 10): builds an engine from ONNX, or loads a serialized .engine / .plan, and
runs it with torch CUDA tensors as device buffers (no pycuda).

Everything that needs no GPU (build plan, 2:4 eligibility, log/inspector parsing, cache paths) lives in `trt_logic`.
This module drives the TensorRT Python API, as the TensorRT 10 docs and NVIDIA's Python code (Polygraphy, samples):
Builder -> create_network(STRONGLY_TYPED when the ONNX carries Q/DQ or fp16 types) -> OnnxParser.parse_from_file
-> create_builder_config (flags, WORKSPACE pool, DETAILED profiling verbosity, DLA, optimization profile,
timing cache) -> build_serialized_network -> Runtime.deserialize_cuda_engine -> IEngineInspector JSON;
execution: set_input_shape / set_tensor_address / execute_async_v3 on a torch CUDA stream.

Proof of sparse kernels: the build log line "(Sparsity) TRT inference plan picked sparse implementation for
layers: ..." captured by our ILogger (`build_report()["picked"]`); eligible layers may still run dense.
Files written beside an .onnx: <stem>.engine, <stem>.inspector.json, <stem>.trt-build.json (plan + log).
Every `import tensorrt` stays inside functions.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgeprune.backends import trt_logic
from edgeprune.backends.base import (Backend, Capabilities, HostFacts, HostView, LayerInfo, SparseLayer, TensorSpec,
                                     nvidia_24_default, nvidia_24_rule)
from edgeprune.backends.trt_log import capture_logger
# re-exported: the backend's public pure API (everything that needs no GPU)
from edgeprune.backends.trt_logic import (DEFAULTS, SPARSE_OPS, BuildPlan, LayerSparsity, ShapeProfile,  # noqa: F401
                                          check_input_shape, check_sparse_eligibility, onnx_inputs, onnx_precision,
                                          parse_device, parse_inspector_json, parse_sparsity_log, plan_build,
                                          shape_profiles, sidecar_paths, timing_cache_path)
from edgeprune.errors import BackendUnavailable, BenchmarkError, ConfigError, ExportError, ModelLoadError

if TYPE_CHECKING:  # a type only: backends never import targets (targets imports backends)
    from edgeprune.targets.schema import DeviceProfile

log = logging.getLogger("edgeprune.tensorrt")
MIN_MAJOR = 10


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _write_bytes(path: Path, data: bytes) -> None:
    from edgeprune._io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _torch_dtype(dtype: np.dtype):
    import torch

    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


class TensorRTBackend(Backend):
    name = "tensorrt"
    package = "tensorrt"
    display = "TensorRT"
    aliases = ("trt",)
    artifact_suffixes = (".engine", ".plan", ".onnx")
    capabilities = Capabilities(
        export_format="TensorRT engine", artifact_suffix=".engine",
        kernel_proof="engine inspector layer info, and the builder log's '(Sparsity) ... picked sparse implementation'",
        precisions={"fp32": (), "fp16": ("sm_53",), "int8": ("sm_61",)},
        patterns={"channel": "dense kernels on smaller shapes",
                  "nm": "2:4 only: sparse tensor cores on sm_80+ with FP16/INT8 weights, --sparsity=enable",
                  "block": "no sparse kernel", "unstructured": "no sparse kernel"},
        # Q/DQ ONNX and FP16 ONNX; the engine is built from them on the device. Checked here on ORT, unfused.
        int8_config="edgeprune.quantize.trt:int8_config",
        quantizers={"int8": "edgeprune.quantize.trt:int8_artifact", "fp16": "edgeprune.quantize.ort:fp16_artifact"},
        auto_candidates=(("fp16", "FP16", ""), ("int8", "INT8 Q/DQ", "")), devices=("gpu", "dla"),
        validates_quantized_on="onnxruntime", unfused_validation=True, dists=("tensorrt", "tensorrt-cu12", "tensorrt-cu13"))

    def __init__(self, options=None):
        super().__init__(options)
        self.plan: BuildPlan | None = None
        self.engine = None
        self.engine_path: Path | None = None
        self.eligibility: list[LayerSparsity] = []
        self.build_log: list[str] | None = None  # None: no build log known (engine loaded without its record)
        self._record: dict[str, Any] = {}  # <stem>.trt-build.json of a loaded engine
        self._bound = False

    @classmethod
    def probe_patterns(cls, host: HostView) -> dict[str, Any]:
        return nvidia_24_rule(host, "TensorRT 2:4 sparse tensor cores")

    @classmethod
    def sparse_constraints(cls) -> tuple[str, ...]:
        return trt_logic.SPARSE_CONSTRAINTS

    @classmethod
    def sparse_default(cls, layer: SparseLayer) -> tuple[str, str]:
        return nvidia_24_default(layer)

    @classmethod
    def sparse_failures(cls, layer: SparseLayer, host: HostFacts, verdict: str) -> list[str]:
        return trt_logic.sparse_failures(layer, host, verdict, cls.name)

    # -- availability -----------------------------------------------------------------
    @classmethod
    def why_unavailable(cls) -> str | None:
        if importlib.util.find_spec("tensorrt") is None:
            return ("the tensorrt package is not installed (pip install tensorrt (NVIDIA index), "
                    "or JetPack's python3-libnvinfer on Jetson)")
        try:
            import tensorrt as trt
        except Exception as err:  # a broken install: missing libnvinfer, CUDA mismatch
            return f"tensorrt is installed but fails to import ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        version = str(getattr(trt, "__version__", "0"))
        try:
            major = int(version.split(".")[0])
        except ValueError:
            major = 0
        if major < MIN_MAJOR:
            return f"tensorrt {version} is too old: edgeprune needs TensorRT >= {MIN_MAJOR} (pip install -U tensorrt)"
        import torch

        if not torch.cuda.is_available():
            return ("tensorrt is installed but no CUDA device is visible (torch.cuda.is_available() is False): "
                    "TensorRT runs only on an NVIDIA GPU with a CUDA build of torch")
        return None

    # -- build / load -------------------------------------------------------------------
    def _load(self, model_path: Any, profile: DeviceProfile | None) -> None:
        import torch

        if not isinstance(model_path, (str, os.PathLike)):
            raise ConfigError(f"the tensorrt backend takes an .onnx, .engine or .plan file, got {type(model_path).__name__}",
                              hint="export to ONNX first (edgeprune export)")
        path = Path(model_path)
        if not path.is_file():
            raise ModelLoadError(f"file not found: {path}", hint="check the path")
        torch.cuda.init()  # TensorRT and torch share the primary CUDA context
        if path.suffix == ".onnx":
            self._build(path, profile)
        elif path.suffix in (".engine", ".plan"):
            dla_core, _ = parse_device(self.options.device)
            self._deserialize(path.read_bytes(), dla_core, path)
            self.engine_path = path
            self._read_record(sidecar_paths(path)["build"])
        else:
            raise ConfigError(f"the tensorrt backend cannot load '{path.suffix}' files ({path.name})",
                              hint="pass an .onnx, .engine or .plan file")
        self._prepare_context()

    def _configure(self, trt, builder, config, plan: BuildPlan):
        for flag in plan.flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then reports tactics
        if plan.dla_core is not None:
            if plan.dla_core >= builder.num_DLA_cores:
                raise BackendUnavailable(f"DLA core {plan.dla_core} was asked, this device has {builder.num_DLA_cores} DLA core(s)",
                                         hint="use --device cuda, or dla:N with N below the DLA count")
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = plan.dla_core
        if plan.profiles:
            opt = builder.create_optimization_profile()
            for sp in plan.profiles:
                opt.set_shape(sp.input, sp.min, sp.opt, sp.max)
            config.add_optimization_profile(opt)
        if plan.timing_cache:
            path = Path(plan.timing_cache)
            cache = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
            if not config.set_timing_cache(cache, ignore_mismatch=False):
                log.warning("TensorRT rejected the timing cache %s (other device/version?): starting an empty one", path)
                config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    def _build(self, onnx_path: Path, profile: DeviceProfile | None) -> None:
        import tensorrt as trt

        self.eligibility = check_sparse_eligibility(onnx_path)
        plan = plan_build(onnx_path, self.options, profile, trt_version=trt.__version__, gpu_name=_gpu_name(),
                          eligibility=self.eligibility)
        self.plan = plan
        logger = capture_logger()
        logger.verbose = bool(dict(self.options.extra).get("verbose_log", False))
        if len(logger.lines) > 100_000:  # one logger per process: keep it from growing without bound
            logger.lines.clear()
        mark = len(logger.lines)
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        ok = parser.parse_from_file(str(onnx_path))  # from file: external weights resolve beside it
        errors = [str(parser.get_error(i)).replace("\n", " ") for i in range(parser.num_errors)]
        if not ok or errors:
            raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path.name}: "
                              + (" | ".join(errors) if errors else "no parser error recorded, see the TensorRT log"),
                              hint="simplify or re-export the ONNX (opset 17+), or replace the unsupported op")
        config = builder.create_builder_config()
        self._configure(trt, builder, config, plan)
        serialized = builder.build_serialized_network(network, config)
        self.build_log = list(logger.lines[mark:])
        if serialized is None:
            errs = [line for line in self.build_log if line.startswith(("[E]", "[F]"))][-3:]
            raise ExportError(f"TensorRT could not build an engine from {onnx_path.name}: "
                              + (" | ".join(errs) or "no error logged"),
                              hint="see build_log; try a larger workspace_mb or fp32")
        if plan.timing_cache:
            try:
                _write_bytes(Path(plan.timing_cache), bytes(config.get_timing_cache().serialize()))
            except OSError as err:  # a cache we cannot save only costs build time next run
                log.warning("could not save the TensorRT timing cache %s: %s", plan.timing_cache, err)
        engine_bytes = bytes(serialized)
        side = sidecar_paths(onnx_path)
        _write_bytes(side["engine"], engine_bytes)
        self.engine_path = side["engine"]
        self._deserialize(engine_bytes, plan.dla_core, side["engine"])
        inspector = self.engine.create_engine_inspector()
        _write_bytes(side["inspector"], inspector.get_engine_information(trt.LayerInformationFormat.JSON).encode())
        eligible, picked = parse_sparsity_log(self.build_log)
        record = {"tensorrt": trt.__version__, "gpu": _gpu_name(), "onnx": str(onnx_path), "plan": plan.to_dict(),
                  "eligible": eligible, "picked": picked, "onnx_eligibility": [e.to_dict() for e in self.eligibility],
                  "log": self.build_log}
        _write_bytes(side["build"], json.dumps(record, indent=1, default=str).encode())

    def _deserialize(self, data: bytes, dla_core: int | None, where: Path) -> None:
        import tensorrt as trt

        self._runtime = trt.Runtime(capture_logger())  # must outlive the engine
        if dla_core is not None:
            self._runtime.DLA_core = dla_core
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ModelLoadError(f"TensorRT could not deserialize {where.name}",
                                 hint="engines only load on the TensorRT version and GPU that built them: rebuild from the ONNX")
        self.engine = engine

    def _read_record(self, path: Path) -> None:
        if not path.is_file():
            return
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable TensorRT build record %s: %s", path, err)
            return
        self.build_log = list(record.get("log") or [])
        self._record = record

    # -- execution ----------------------------------------------------------------------
    def _prepare_context(self) -> None:
        import tensorrt as trt
        import torch

        eng = self.engine
        self.context = eng.create_execution_context()
        if self.context is None:
            raise BackendUnavailable("TensorRT could not create an execution context (out of GPU memory?)",
                                     hint="free GPU memory or lower max_batch / max_seq_len")
        names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
        self._inputs = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes: dict[str, np.dtype] = {}
        for n in names:
            try:
                self._dtypes[n] = np.dtype(trt.nptype(eng.get_tensor_dtype(n)))
            except TypeError:
                raise ConfigError(f"tensor '{n}' has TensorRT type {eng.get_tensor_dtype(n)}, which numpy cannot hold",
                                  hint="keep fp32/fp16/int I/O types (onnx fp16 conversion with keep_io_types)") from None
        self._ranges: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        for n in self._inputs:
            if eng.is_shape_inference_io(n):
                raise ConfigError(f"input '{n}' is a shape tensor, which this backend does not feed",
                                  hint="export with static shape inputs")
            shape = tuple(eng.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                lo, _, hi = eng.get_tensor_profile_shape(n, 0)
                self._ranges[n] = (tuple(lo), tuple(hi))
            else:
                self._ranges[n] = (shape, shape)
        self._stream = torch.cuda.Stream()
        self._buffers: dict[str, Any] = {}
        self._bound = False

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(n, tuple(d if d >= 0 else f"d{i}" for i, d in enumerate(self.engine.get_tensor_shape(n))),
                           self._dtypes[n].name) for n in self._inputs]

    def _buffer(self, name: str, shape: tuple[int, ...]):
        import torch

        buf = self._buffers.get(name)
        if buf is None or tuple(buf.shape) != shape:
            buf = torch.empty(shape, dtype=_torch_dtype(self._dtypes[name]), device="cuda")
            self._buffers[name] = buf
        return buf

    def _bind(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Set shapes, copy inputs into device buffers and point the context at all buffers (on our stream)."""
        import torch

        missing = [n for n in self._inputs if n not in inputs]
        if missing:
            raise ConfigError(f"tensorrt inputs: missing {missing}; the engine expects {self._inputs}",
                              hint="pass one array per engine input, named as listed")
        for n in self._inputs:
            arr = np.ascontiguousarray(inputs[n], dtype=self._dtypes[n])
            shape = tuple(int(d) for d in arr.shape)
            check_input_shape(n, shape, *self._ranges[n])
            if tuple(self.context.get_tensor_shape(n)) != shape and not self.context.set_input_shape(n, shape):
                raise ConfigError(f"TensorRT refused shape {shape} for input '{n}'", hint="see the TensorRT log")
            buf = self._buffer(n, shape)
            buf.copy_(torch.from_numpy(arr if arr.flags.writeable else arr.copy()))
            self.context.set_tensor_address(n, buf.data_ptr())
        for n in self._outputs:
            shape = tuple(self.context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise ConfigError(f"output '{n}' has a data-dependent shape {shape}, which this backend does not support",
                                  hint="export with static output shapes")
            self.context.set_tensor_address(n, self._buffer(n, shape).data_ptr())
        self._bound = True

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self._stream.cuda_stream):
            raise BenchmarkError("TensorRT execute_async_v3 failed", hint="see the TensorRT log (edgeprune.tensorrt)")

    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.cuda.stream(self._stream):
            self._bind(inputs)
            self._execute()
            outs = [self._buffers[n].to("cpu") for n in self._outputs]
        self._stream.synchronize()
        return [o.numpy() for o in outs]

    def runner(self, inputs: Mapping[str, np.ndarray]):
        """Inputs are copied to the GPU once here; the timed callable is execute_async_v3 + stream sync only."""
        import torch

        with torch.cuda.stream(self._stream):
            self._bind(inputs)
        self._stream.synchronize()
        ctx, handle, stream = self.context, self._stream.cuda_stream, self._stream

        def step() -> None:
            if not ctx.execute_async_v3(handle):
                raise BenchmarkError("TensorRT execute_async_v3 failed", hint="see the TensorRT log (edgeprune.tensorrt)")
            stream.synchronize()

        return step

    # -- reports ------------------------------------------------------------------------
    def _picked(self) -> tuple[list[str], list[str]] | None:
        return parse_sparsity_log(self.build_log) if self.build_log is not None else None

    def inspect(self) -> list[LayerInfo]:
        """Per-layer type and tactic from the engine inspector; `sparse` from the build log's picked list."""
        import tensorrt as trt

        inspector = self.engine.create_engine_inspector()
        if self._bound:  # concrete shapes and formats for the bound input shapes
            inspector.execution_context = self.context
        found = self._picked()
        return parse_inspector_json(inspector.get_engine_information(trt.LayerInformationFormat.JSON),
                                    found[1] if found is not None else None)

    def build_report(self) -> dict[str, Any]:
        """What TensorRT said about sparsity: eligible and picked layers (picked = proof), and why the
        kSPARSE_WEIGHTS flag was or was not set."""
        found = self._picked()
        record = self._record
        plan = self.plan.to_dict() if self.plan is not None else record.get("plan")
        return {
            "build_log_found": found is not None,
            "eligible": found[0] if found else [],
            "picked": found[1] if found else [],
            "sparse_weights": (plan or {}).get("sparse_weights"),
            "sparse_reason": (plan or {}).get("sparse_reason"),
            "onnx_eligible": [e.name for e in self.eligibility if e.eligible] or
                             [e["name"] for e in record.get("onnx_eligibility", []) if e.get("eligible")],
            "engine": str(self.engine_path) if self.engine_path else None,
            "plan": plan,
        }

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        report = self.build_report()
        d["tensorrt"] = {k: report[k] for k in ("engine", "sparse_weights", "sparse_reason", "picked")}
        return d

    def artifact_size_bytes(self) -> int | None:
        if self.engine_path is not None and self.engine_path.is_file():
            return self.engine_path.stat().st_size
        return super().artifact_size_bytes()


__all__ = ["TensorRTBackend", "capture_logger", "BuildPlan", "LayerSparsity", "ShapeProfile", "check_sparse_eligibility",
           "plan_build", "parse_sparsity_log", "parse_inspector_json", "timing_cache_path"]
