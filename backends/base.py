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
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from edgeprune.errors import BackendUnavailable, EdgepruneError, ModelLoadError

if TYPE_CHECKING:  # a type only: backends never import targets (targets imports backends)
    from edgeprune.targets.schema import DeviceProfile


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


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a runtime accelerates and how it proves it, as data (HARDWARE.md §6, §8): the planner, quantize, export,
    bundle, probe and runner read this instead of testing runtime names.

    precisions: precision -> the ISA flags (CPU, any one of them) or "sm_XY" compute capability (GPU) it needs to pay;
        an empty tuple means it pays wherever the runtime runs.
    patterns: pattern kind ("channel", "nm", "block", "unstructured") -> what the runtime does with it.
    quantizers: precision -> "module:function" that builds that artifact from an FP32 ONNX (edgeprune.quantize.*);
        named by string so that this low layer does not import the transforms that use it.
    """

    export_format: str  # what the runtime loads: "ONNX", "OpenVINO IR", "TensorRT engine", "torch.export"
    artifact_suffix: str  # the artifact optimize/bundle write for it
    kernel_proof: str  # how a run shows which kernel really ran
    precisions: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=lambda: {"fp32": ()})
    patterns: Mapping[str, str] = dataclasses.field(default_factory=lambda: {"channel": "dense kernels, smaller shapes"})
    quantizers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # "module:function" (method, dynamic, weights_only) -> the INT8 quantizer's config from the CLI options; "": defaults
    int8_config: str = ""
    times_on_cpu: bool = False  # this CPU host can time it: optimize measures plans on it here
    validates_quantized_on: str | None = None  # runtime that runs its quantized artifact here (None: itself)
    unfused_validation: bool = False  # run that check with graph optimizations off (the exact Q/DQ semantics)
    quantized_suffix: str = ".onnx"  # what its quantizers write (TensorRT: a Q/DQ ONNX the device builds from)
    companions: tuple[str, ...] = ()  # suffixes of files that travel with the artifact (IR's .bin)
    dists: tuple[str, ...] = ()  # pip distributions that provide it (probe, environment); default: `package`
    devices: tuple[str, ...] = ("cpu",)  # profile device kinds it can run on
    # what optimize's precision="auto" tries, in order: (precision, label, "module:function" -> quantizer config,
    # "" = the quantizer's defaults); each one is built, timed beside the dense model and scored (optimizer/precision.py)
    auto_candidates: tuple[tuple[str, str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class HostView:
    """What the host probe found, as a backend needs it to describe itself in the host profile."""

    flags: frozenset[str]  # /proc/cpuinfo flags
    gpu_capability: tuple[int, int] | None  # first NVIDIA GPU's compute capability, or None
    precisions: tuple[str, ...]  # precisions the host's hardware offers
    source: str  # "probe <date>", for every rule's source field


def dense_rule(reason: str, source: str, confidence: str = "D") -> dict[str, Any]:
    """A profile pattern entry saying zeros run dense, for every sparse pattern kind."""
    rule = {"accelerated": "no", "reason": reason, "source": source, "confidence": confidence}
    return {"nm": rule, "block": rule, "unstructured": rule}


@dataclasses.dataclass(frozen=True)
class HostFacts:
    """What this machine can run sparse kernels with: AMX (CPU sparse weights), a CUDA GPU, installed runtimes."""

    amx: bool
    cuda: str | None  # device name, or None
    cuda_capability: tuple[int, int] | None
    installed: frozenset[str] = frozenset()  # backend names whose runtime package is importable here
    cpu: str = ""


@dataclasses.dataclass(frozen=True)
class SparseLayer:
    """One sparsified layer, as a backend's sparse rules read it (matrix view: out_ch x k)."""

    pattern: str  # "2:4", "block4x4", "unstructured"
    kind: str  # nm | block | unstructured
    is_24: bool
    op: str
    out_ch: int
    k: int
    sparsity: float
    precision: str = "fp32"
    sparse_rate: float = 0.5  # OpenVINO's CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE


# measured on H100, fp16, cuSPARSELt (benchmarks/results/gpu_semi_structured.md): 2:4 beat dense only at 8192^3
GPU_PAYS_FROM = 8192
GPU_EVIDENCE = ("H100 fp16 cuSPARSELt: MiniLM FFN 128x384x1536 0.03x of dense, LLaMA-7B MLP 2048x4096x11008 0.42x, "
                "8192^3 1.38x (benchmarks/results/gpu_semi_structured.md)")


def nvidia_24_default(layer: SparseLayer) -> tuple[str, str]:
    """NVIDIA sparse tensor cores: 2:4 or nothing."""
    if layer.is_24:
        return "yes", "2:4 sparse tensor cores (Ampere+)"
    return "no", f"NVIDIA sparse tensor cores read only 2:4, not {layer.pattern}"


def nvidia_24_rule(host: HostView, why: str) -> dict[str, Any]:
    """2:4 on sparse tensor cores (compute capability >= 8.0), dense for every other pattern (HARDWARE.md §1c, §2)."""
    cap = host.gpu_capability
    if not cap or cap < (8, 0):
        return dense_rule("no GPU with 2:4 sparse tensor cores (compute capability >= 8.0) on this host: pruned "
                          "weights run dense", f"{host.source}: GPU probe")
    rule = dense_rule("no block/unstructured sparse kernels on NVIDIA GPUs", "HARDWARE.md §1c [S4]")
    rule["nm"] = {"n": 2, "m": 4, "accelerated": "yes", "devices": ["gpu"], "min_channels_multiple": 4,
                  "precisions": [p for p in ("fp16", "bf16", "int8") if p in host.precisions],
                  "reason": f"{why} on compute capability {cap[0]}.{cap[1]} (Ampere+)",
                  "source": f"{host.source}: GPU compute capability; HARDWARE.md §2 [S4]", "confidence": "D"}
    return rule


class Backend(abc.ABC):
    """A runtime. Subclasses set `name`, `package`, `capabilities`, and implement `_load`, `run`, `input_specs`.

    Registering the class (edgeprune.backends.register_backend, or the built-in table) is all a new runtime needs:
    every caller asks the registry and the class's capabilities.
    """

    name: ClassVar[str]
    package: ClassVar[str]  # pip package that provides the runtime (named in errors)
    display: ClassVar[str] = ""  # the runtime's name in prose ("ONNX Runtime"); default: `name`
    install_hint: ClassVar[str] = ""  # how to install it, one line; default: pip install `package`
    aliases: ClassVar[tuple[str, ...]] = ()  # other spellings accepted for `name` (ort, ov, ...)
    artifact_suffixes: ClassVar[tuple[str, ...]] = (".onnx",)
    capabilities: ClassVar[Capabilities]

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
    def label(cls) -> str:
        return cls.display or cls.name

    @classmethod
    def how_to_install(cls) -> str:
        return cls.install_hint or f"pip install {cls.package}"

    # -- converting the validated ONNX export into this runtime's own format -------------------
    converts_onnx: ClassVar[bool] = False  # True when convert_onnx writes a format other than ONNX

    @classmethod
    def convert_onnx(cls, onnx_path: Path, out_path: Path) -> str:
        """Write `onnx_path` in this runtime's format at `out_path` (its companions beside it); returns the tool used.

        Only for runtimes whose artifact is not the ONNX file itself (converts_onnx); edgeprune.exporter validates
        the result against the reference and moves it into place atomically."""
        raise NotImplementedError(f"{cls.name} runs the ONNX file itself: nothing to convert")

    @classmethod
    def version(cls) -> str | None:
        from importlib import metadata

        try:
            return metadata.version(cls.package)
        except metadata.PackageNotFoundError:
            return None

    # -- what the host probe writes into the "host" profile for this runtime ------------------
    @classmethod
    def gpu_build(cls, version: str, dist: str) -> bool:
        """Whether the installed build (version string, distribution name) runs on an NVIDIA GPU."""
        return "cpu" not in cls.capabilities.devices

    @classmethod
    def probe_patterns(cls, host: HostView) -> dict[str, Any]:
        """Sparse-pattern rules for the host profile (HARDWARE.md §6); by default zeros run dense."""
        return dense_rule(f"{cls.name}: no sparse kernel known", f"{host.source}: default", "unconfirmed")

    # -- what it does with a zero pattern (HARDWARE.md §6), read by edgeprune.sparsity.support --------
    sparse_name: ClassVar[str | None] = None  # the name its sparse path is reported under (default: `name`)

    @classmethod
    def sparse_constraints(cls) -> tuple[str, ...]:
        """The documented conditions under which the runtime uses a sparse pattern at all."""
        return ("no sparse kernel: MatMul/Gemm/Conv run dense",)

    @classmethod
    def sparse_default(cls, layer: SparseLayer) -> tuple[str, str]:
        """(verdict, reason) without a profile: yes | memory-only | no."""
        return "no", cls.capabilities.patterns.get(layer.kind, "no sparse kernel")

    @classmethod
    def sparse_failures(cls, layer: SparseLayer, host: HostFacts, verdict: str) -> list[str]:
        """Every condition this layer or host fails, each one line (the verdict drops to "no" if any)."""
        return []

    # -- lifecycle --------------------------------------------------------------------
    def compile(self, model_path: str | Path | Any, profile: DeviceProfile | None = None) -> "Backend":
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
    def _load(self, model_path: Any, profile: DeviceProfile | None) -> None: ...

    @abc.abstractmethod
    def input_specs(self) -> list[TensorSpec]: ...

    def output_specs(self) -> list[TensorSpec] | None:
        """The artifact's outputs, in run() order, where the runtime reports them (None: it does not)."""
        return None

    def output_names(self) -> list[str] | None:
        """The artifact's output names, in run() order (None: output_0, ...)."""
        specs = self.output_specs()
        return None if specs is None else [s.name for s in specs]

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
        files = [self.artifact] + [self.artifact.with_suffix(s) for s in self.capabilities.companions]
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
