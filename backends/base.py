"""The backend protocol: one class per runtime, imported lazily.

A backend turns an artifact (ONNX file, OpenVINO IR, TensorRT engine, torch module or .pt2) into a
session that runs numpy inputs, reports per-layer info and is timed by `edgeprune.measurement.bench`.
Runtime packages are imported inside methods only, so `import edgeprune` works with torch alone.
"""
from __future__ import annotations

import abc
import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from edgeprune.errors import BackendUnavailable, EdgepruneError, ModelLoadError


@dataclasses.dataclass(frozen=True)
class BackendOptions:
    """Runtime settings shared by all backends; each backend reads the fields that apply to it."""

    threads: int | None = None  # intra-op threads; None = runtime default
    device: str = "cpu"  # cpu | cuda | gpu | npu | dla:N
    precision: str = "fp32"  # fp32 | fp16 | int8 (what the artifact is built for)
    hint: str = "latency"  # OpenVINO performance hint: latency | throughput
    nstreams: int | None = None  # OpenVINO streams
    graph_optimization: str = "all"  # ORT: disable | basic | extended | all
    torch_compile: bool = False  # torch backend: wrap in torch.compile
    sparse_weights: bool = False  # TensorRT kSPARSE_WEIGHTS / OpenVINO sparse decompression
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # runtime-specific keys


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # str for a dynamic dim
    dtype: str  # numpy dtype name

    def concrete_shape(self, batch: int = 1, default_dim: int = 1) -> tuple[int, ...]:
        dims = []
        for i, d in enumerate(self.shape):
            dims.append(d if isinstance(d, int) and d > 0 else (batch if i == 0 else default_dim))
        return tuple(dims)


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One row of per-layer info read back from the runtime (perf counters, engine inspector, graph)."""

    name: str
    op_type: str
    exec_type: str = ""  # kernel / tactic actually chosen, when the runtime says
    time_ms: float | None = None
    sparse: bool | None = None  # True only when the runtime reports a sparse kernel
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Backend(abc.ABC):
    """A runtime. Subclasses set `name`, `package`, and implement `_load`, `run`, `input_specs`."""

    name: ClassVar[str]
    package: ClassVar[str]  # pip package that provides the runtime (named in errors)
    artifact_suffixes: ClassVar[tuple[str, ...]] = (".onnx",)

    def __init__(self, options: BackendOptions | None = None):
        self.options = options or BackendOptions()
        self.artifact: Path | None = None
        self.compile_time_s: float | None = None
        self.load_rss_mb: float | None = None

    # -- availability -----------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def why_unavailable(cls) -> str | None:
        """None when the runtime can run here, else one line saying why not and what to install."""

    @classmethod
    def available(cls) -> bool:
        return cls.why_unavailable() is None

    @classmethod
    def require(cls) -> None:
        reason = cls.why_unavailable()
        if reason:
            raise BackendUnavailable(f"backend '{cls.name}' is unavailable: {reason}")

    @classmethod
    def version(cls) -> str | None:
        from importlib import metadata

        try:
            return metadata.version(cls.package)
        except metadata.PackageNotFoundError:
            return None

    # -- lifecycle --------------------------------------------------------------------
    def compile(self, model_path: str | Path | Any, profile: Any = None) -> "Backend":
        """Load/compile the artifact for this runtime; records compile_time_s. Returns self."""
        import psutil

        self.require()
        proc = psutil.Process()
        rss0 = proc.memory_info().rss
        t0 = time.perf_counter()
        try:
            self._load(model_path, profile)
        except EdgepruneError:
            raise
        except Exception as err:  # the runtime's own message, first line: unsupported opset, bad graph, ...
            raise ModelLoadError(_load_failure(self.name, model_path, err),
                                 hint="re-export it for this runtime (a lower --opset), or update the runtime") from err
        self.compile_time_s = time.perf_counter() - t0
        # Memory the loaded session added to this process (the process peak includes torch etc.).
        self.load_rss_mb = (proc.memory_info().rss - rss0) / 2**20
        if isinstance(model_path, (str, Path)):
            self.artifact = Path(model_path)
        return self

    @abc.abstractmethod
    def _load(self, model_path: Any, profile: Any) -> None: ...

    @abc.abstractmethod
    def input_specs(self) -> list[TensorSpec]: ...

    @abc.abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; outputs in the artifact's output order."""

    def runner(self, inputs: Mapping[str, np.ndarray]):
        """A zero-argument callable for the timing loop, with all per-call setup hoisted out."""
        return lambda: self.run(inputs)

    def prepare_inputs(self, inputs: Mapping[str, np.ndarray] | None, batch: int | None = None) -> dict[str, np.ndarray]:
        """Check given inputs against the artifact, or make realistic random ones (static dims kept,
        dynamic batch = `batch` or 1; a `batch` that contradicts a static batch dim is an error)."""
        from edgeprune.measurement.timing import random_inputs

        if inputs is None:
            return random_inputs(self.input_specs(), batch=batch)
        return match_inputs(self.input_specs(), inputs, where=f"{self.name} inputs")

    def inspect(self) -> list[LayerInfo]:
        """Per-layer info; backends without a source of it return the graph's op list."""
        return []

    def benchmark(self, inputs: Mapping[str, np.ndarray], **kwargs):
        from edgeprune.measurement.timing import measure

        return measure(self.runner(inputs), **kwargs)

    def artifact_size_bytes(self) -> int | None:
        if self.artifact is None or not self.artifact.exists():
            return None
        files = [self.artifact]
        if self.artifact.suffix == ".xml":  # OpenVINO IR keeps its weights in the .bin beside it
            files.append(self.artifact.with_suffix(".bin"))
        files += list(self.artifact.parent.glob(self.artifact.name + ".data"))  # ONNX external data
        return sum(f.stat().st_size for f in files if f.exists())

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "version": self.version(), "options": dataclasses.asdict(self.options)}


def match_inputs(specs: Sequence[TensorSpec], inputs: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Check names, ranks and dtypes of `inputs` against `specs`; cast only lossless int widths."""
    from edgeprune.errors import ConfigError

    names = [s.name for s in specs]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ConfigError(
            f"{where}: missing input(s) {missing}; the model expects {names}",
            hint="pass one array per model input, named as listed",
        )
    out = {}
    for spec in specs:
        arr = np.asarray(inputs[spec.name])
        if arr.ndim != len(spec.shape):
            raise ConfigError(
                f"{where}: input '{spec.name}' has shape {tuple(arr.shape)}, the model expects rank {len(spec.shape)} {spec.shape}",
                hint="fix --input-shape for this input",
            )
        for i, (got, want) in enumerate(zip(arr.shape, spec.shape)):
            if isinstance(want, int) and want > 0 and got != want:
                raise ConfigError(
                    f"{where}: input '{spec.name}' dim {i} is {got}, the model was built for {want} ({spec.shape})",
                    hint="use the model's static shape or re-export with a dynamic dim",
                )
        if arr.dtype != np.dtype(spec.dtype):
            arr = arr.astype(spec.dtype)
        out[spec.name] = np.ascontiguousarray(arr)
    return out


def _load_failure(backend: str, model_path: Any, err: Exception) -> str:
    """One line: which runtime refused which file, and the runtime's own reason without its C++ source location
    (ORT: 'Load model from P failed:/onnxruntime_src/...h:46 void f(...) <reason>'); for an opset, its sentences."""
    import re

    name = Path(model_path).name if isinstance(model_path, (str, Path)) else type(model_path).__name__
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    text = re.sub(r"Load model from \S+ failed:", "", text)
    text = re.sub(r"/\S+:\d+ [^()]*\((?:[^()]|\([^()]*\))*\)\s*", "", text).strip()
    sentences = re.split(r"(?<=\.)\s+", text)
    about_opset = [x for x in sentences if "opset" in x.lower()]
    why = " ".join(about_opset) if about_opset else text
    return f"{backend} cannot load {name}: {why[:300]}"
