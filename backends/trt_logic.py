"""The GPU-free half of the TensorRT backend: pure Python, no `tensorrt` import, unit-tested anywhere.

* `check_sparse_eligibility` (in trt_onnx.py, re-exported here) re-checks TensorRT's 2:4 rule on the ONNX weights.
* `plan_build` decides every builder setting (flags, precision, strong typing, workspace, DLA, shapes,
  timing cache, kSPARSE_WEIGHTS and why) before TensorRT is touched.
* `parse_sparsity_log` / `parse_inspector_json` read back what TensorRT did. Only the build-log line
  "(Sparsity) TRT inference plan picked sparse implementation for layers: ..." proves a sparse kernel ran.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence


from edgeprune.backends.base import BackendOptions, LayerInfo
from edgeprune.errors import ConfigError

from edgeprune.backends.trt_onnx import (  # noqa: F401  (re-exported: part of this module's public API)
    SPARSE_OPS, LayerSparsity, _load_onnx, check_sparse_eligibility, onnx_inputs, onnx_precision)

if TYPE_CHECKING:  # a type only: backends never import targets (targets imports backends)
    from edgeprune.targets.schema import DeviceProfile
DEFAULTS = {"batch": 1, "max_batch": 32, "seq_len": 128, "max_seq_len": 512, "workspace_mb": 1024}
_ELIGIBLE_RE = re.compile(r"\(Sparsity\)\s*Layers eligible for sparse math:\s*(.*)$")
_PICKED_RE = re.compile(r"\(Sparsity\)\s*TRT inference plan picked sparse implementation for layers:\s*(.*)$")




# -- the build plan ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShapeProfile:
    """One input's range in the optimization profile (trtexec --minShapes/--optShapes/--maxShapes)."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    """Every builder setting, decided without TensorRT. `flags` are trt.BuilderFlag member names."""

    onnx_path: str
    precision: str  # fp32 | fp16 | int8 | bf16: what the engine computes in
    strongly_typed: bool  # types come from the ONNX (Q/DQ or fp16 tensors): no FP16/INT8 flags allowed
    flags: tuple[str, ...]
    workspace: int  # bytes, MemoryPoolType.WORKSPACE
    dla_core: int | None
    gpu_fallback: bool
    sparse_weights: bool
    sparse_reason: str
    eligible_layers: tuple[str, ...]  # ONNX nodes whose weights meet 2:4
    timing_cache: str | None
    profiles: tuple[ShapeProfile, ...]  # one optimization profile; empty for static shapes
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_device(device: str) -> tuple[int | None, str | None]:
    """(DLA core or None for the GPU, note) from BackendOptions.device."""
    dev = (device or "cuda").strip().lower()
    if dev in ("cuda", "gpu", "cuda:0", "tensorrt", "trt"):
        return None, None
    if dev == "cpu":
        return None, "TensorRT runs on the GPU: device 'cpu' (the default) builds for the GPU"
    m = re.fullmatch(r"dla(?::(\d+))?", dev)
    if m:
        return int(m.group(1) or 0), None
    raise ConfigError(f"TensorRT cannot target device '{device}'",
                      hint="use cuda (or gpu), dla or dla:N; pick another GPU with CUDA_VISIBLE_DEVICES")


def _int(extra: Mapping[str, Any], key: str) -> int:
    value = extra.get(key, DEFAULTS[key])
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"TensorRT option {key}={value!r} is not an integer", hint=f"e.g. {key}={DEFAULTS[key]}") from None
    if out < 1:
        raise ConfigError(f"TensorRT option {key}={out} must be >= 1", hint=f"e.g. {key}={DEFAULTS[key]}")
    return out


def shape_profiles(inputs: Sequence[tuple[str, tuple[int | str, ...]]], extra: Mapping[str, Any],
                   static: bool = False) -> tuple[ShapeProfile, ...]:
    """One profile covering every dynamic input: batch dim (axis 0) 1..max_batch (opt `batch`), other dynamic
    dims 1..max_seq_len (opt `seq_len`); `extra["shapes"] = {name: {"min", "opt", "max"}}` overrides per input.
    `static` (DLA) pins min = opt = max."""
    given = dict(extra.get("shapes") or {})
    names = [n for n, _ in inputs]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(f"TensorRT shapes given for unknown input(s) {unknown}; the model's inputs are {names}",
                          hint="name inputs as the ONNX file does")
    batch, max_batch, seq, max_seq = (_int(extra, k) for k in ("batch", "max_batch", "seq_len", "max_seq_len"))
    if batch > max_batch or seq > max_seq:
        raise ConfigError(f"TensorRT optimum shape above its maximum (batch {batch} > {max_batch} or seq_len {seq} > {max_seq})",
                          hint="raise max_batch / max_seq_len")
    out = []
    for name, dims in inputs:
        if name in given:
            spec = given[name]
            try:
                lo, mid, hi = (tuple(int(d) for d in spec[k]) for k in ("min", "opt", "max"))
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"TensorRT shapes for '{name}' must be {{'min': [...], 'opt': [...], 'max': [...]}}, got {spec!r}",
                                  hint="give three integer lists of the input's rank") from None
            for label, s in (("min", lo), ("opt", mid), ("max", hi)):
                if len(s) != len(dims):
                    raise ConfigError(f"TensorRT {label} shape {s} for '{name}' has rank {len(s)}, the input has rank {len(dims)} {dims}",
                                      hint="give one value per dimension")
                for i, (got, want) in enumerate(zip(s, dims)):
                    if isinstance(want, int) and got != want:
                        raise ConfigError(f"TensorRT {label} shape for '{name}' sets static dim {i} to {got}, the model has {want}",
                                          hint="only dynamic dims may vary")
            if not all(a <= b <= c for a, b, c in zip(lo, mid, hi)) or min(lo, default=1) < 1:
                raise ConfigError(f"TensorRT shapes for '{name}' need 1 <= min <= opt <= max per dim, got {lo} {mid} {hi}",
                                  hint="fix the shape range")
        elif all(isinstance(d, int) for d in dims):
            continue
        else:
            lo = tuple(d if isinstance(d, int) else 1 for d in dims)
            mid = tuple(d if isinstance(d, int) else (batch if i == 0 else seq) for i, d in enumerate(dims))
            hi = tuple(d if isinstance(d, int) else (max_batch if i == 0 else max_seq) for i, d in enumerate(dims))
        if static:
            lo = hi = mid
        out.append(ShapeProfile(name, lo, mid, hi))
    return tuple(out)


def _verdict(profile: DeviceProfile | None) -> tuple[str, str]:
    if profile is None:
        return "yes", "no device profile: assuming an Ampere-or-newer NVIDIA GPU (2:4 sparse tensor cores)"
    verdict, reason = profile.accelerates("tensorrt", "2:4")  # a device without it answers "no", with the reason
    return str(verdict), f"profile {profile.name}: {reason}"


def plan_build(onnx_path: Any, options: BackendOptions | None = None, profile: DeviceProfile | None = None, *,
               trt_version: str | None = None, gpu_name: str | None = None,
               eligibility: Sequence[LayerSparsity] | None = None) -> BuildPlan:
    """All builder settings for `onnx_path`. kSPARSE_WEIGHTS is set only when the profile says 2:4 is
    accelerated on tensorrt ("yes"), the engine computes in fp16 or int8, and at least one layer's weight
    meets 2:4; otherwise the reason is recorded. `options.extra` keys: sparsity ("auto" | "disable"),
    workspace_mb, gpu_fallback, timing_cache (path or False), shapes, batch, max_batch, seq_len, max_seq_len."""
    options = options or BackendOptions()
    extra = dict(options.extra)
    model = _load_onnx(onnx_path)
    path = str(onnx_path) if not hasattr(onnx_path, "graph") else "<ModelProto>"
    notes: list[str] = []
    dla_core, note = parse_device(options.device)
    if note:
        notes.append(note)
    precision, strongly_typed = _build_precision(model, options.precision, path, notes)
    flags: list[str] = ["FP16"] if (not strongly_typed and precision == "fp16") else []
    gpu_fallback = _dla_fallback(dla_core, precision, extra, flags, notes)
    layers = list(eligibility) if eligibility is not None else check_sparse_eligibility(model)
    sparse, reason, eligible = _sparse_decision(layers, extra, profile, precision)
    if sparse:
        flags.append("SPARSE_WEIGHTS")
    cache = extra.get("timing_cache", None)
    if cache is False:
        cache_path = None
    elif cache:
        cache_path = str(cache)
    else:
        cache_path = str(timing_cache_path(profile.name if profile is not None else "generic", trt_version or "unknown",
                                           gpu_name or "unknown"))
    workspace = _int(extra, "workspace_mb") * 2**20
    profiles = shape_profiles(onnx_inputs(model), extra, static=dla_core is not None)
    if dla_core is not None and profiles:
        notes.append("DLA has no dynamic shapes: every profile is pinned to its opt shape")
    return BuildPlan(path, precision, strongly_typed, tuple(flags), workspace, dla_core, gpu_fallback, sparse, reason,
                     eligible, cache_path, profiles, tuple(notes))


def _build_precision(model, asked: str, path: str, notes: list[str]) -> tuple[str, bool]:
    """(engine precision, strongly typed): an fp16 / Q/DQ ONNX is built strongly typed as the file says; an fp32
    one in the precision asked (fp32 or fp16; int8 needs Q/DQ nodes, implicit calibration is not used)."""
    detected = onnx_precision(model)
    if detected != "fp32":
        if asked not in (detected, "fp32"):
            notes.append(f"precision {asked} was asked, but the ONNX carries {detected} types: "
                         f"built strongly typed as the file says")
        elif asked == "fp32":
            notes.append(f"precision {detected} taken from the ONNX (strongly typed network)")
        return detected, True
    if asked == "int8":
        raise ConfigError(f"TensorRT int8 needs a Q/DQ ONNX, {Path(path).name} has no Quantize/DequantizeLinear nodes",
                          hint="quantize the model first (edgeprune quantize); implicit INT8 calibration is not used")
    if asked not in ("fp32", "fp16"):
        raise ConfigError(f"TensorRT precision '{asked}' is not supported here", hint="use fp32, fp16 or int8")
    return asked, False


def _dla_fallback(dla_core: int | None, precision: str, extra: dict, flags: list[str], notes: list[str]) -> bool:
    """Whether DLA layers may fall back to the GPU (adds GPU_FALLBACK); DLA itself runs FP16 or INT8 only."""
    if dla_core is None:
        return False
    if precision not in ("fp16", "int8"):
        raise ConfigError(f"DLA runs FP16 or INT8 only, the plan's precision is {precision}",
                          hint="pass precision fp16, or an fp16 / Q/DQ ONNX")
    fallback = bool(extra.get("gpu_fallback", True))
    if fallback:
        flags.append("GPU_FALLBACK")
        notes.append("DLA with GPU fallback: layers DLA cannot run move to the GPU silently (check inspect())")
    return fallback


def _sparse_decision(layers: list, extra: dict, profile: DeviceProfile | None,
                     precision: str) -> tuple[bool, str, tuple[str, ...]]:
    """(kSPARSE_WEIGHTS?, the reason: every failing condition, or what holds, eligible layer names)."""
    eligible = tuple(layer.name for layer in layers if layer.eligible)
    fails = []
    mode = str(extra.get("sparsity", "auto")).lower()
    if mode not in ("auto", "disable"):
        raise ConfigError(f"TensorRT sparsity mode '{mode}' is unknown", hint="use auto or disable")
    if mode == "disable":
        fails.append("sparsity disabled by option (sparsity=disable)")
    verdict, why = _verdict(profile)
    if verdict != "yes":
        fails.append(f"2:4 is '{verdict}' for tensorrt on this device ({why})")
    if precision not in ("fp16", "int8"):
        fails.append(f"precision {precision}: TensorRT sparse tactics need an FP16 or INT8 engine")
    if not eligible:
        fails.append(f"no Conv/MatMul/Gemm weight meets 2:4 ({len(layers)} checked)")
    if fails:
        return False, "; ".join(fails), eligible
    listed = ", ".join(eligible[:8]) + (", ..." if len(eligible) > 8 else "")
    return True, f"{why}; precision {precision}; {len(eligible)}/{len(layers)} layers meet 2:4 ({listed})", eligible


# -- reading back what TensorRT did --------------------------------------------------------


def _split_layers(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_sparsity_log(lines: Iterable[str]) -> tuple[list[str], list[str]]:
    """(eligible, picked) layer names from TensorRT's build log, with or without trtexec's
    "[date] [I] [TRT]" prefix; repeated lines (several builds / profiles) are merged in order."""
    eligible: list[str] = []
    picked: list[str] = []
    for chunk in lines:
        for line in str(chunk).splitlines():
            for regex, into in ((_ELIGIBLE_RE, eligible), (_PICKED_RE, picked)):
                m = regex.search(line)
                if m:
                    into.extend(n for n in _split_layers(m.group(1)) if n not in into)
    return eligible, picked


def _matches(layer: str, names: set[str]) -> bool:
    """A fused engine layer 'a + b' matches when it, or any of its parts, is named."""
    return layer in names or any(part.strip() in names for part in layer.split(" + "))


def _formats(tensors: Any) -> list[str]:
    return [str(t.get("Format/Datatype", "")) for t in tensors or [] if isinstance(t, dict)]


def parse_inspector_json(text: str | Mapping[str, Any], picked: Iterable[str] | None = None) -> list[LayerInfo]:
    """Layers from IEngineInspector.get_engine_information(LayerInformationFormat.JSON) (or trtexec
    --exportLayerInfo): the DETAILED form {"Layers": [{...}], "Bindings": [...]} and the LAYER_NAMES_ONLY
    form {"Layers": ["name", ...]}. `picked` is the build log's picked list: None when no build log is known.

    sparse = True when the layer is in `picked` or its tactic name contains "sparse". The word "sparse" in
    tactic names is unconfirmed (HARDWARE.md §8, §10); the build-log line is the proof."""
    data = json.loads(text) if isinstance(text, (str, bytes)) else text
    rows = data.get("Layers", []) if isinstance(data, Mapping) else data
    if isinstance(rows, (str, Mapping)):
        rows = [rows]
    names = set(picked) if picked is not None else None
    out = []
    for row in rows or []:
        if isinstance(row, str):
            name, op, tactic, extra = row, "", "", {}
        elif isinstance(row, Mapping):
            name, op, tactic = str(row.get("Name", "")), str(row.get("LayerType", "")), str(row.get("TacticName", ""))
            extra = {k: row[k] for k in ("ParameterType", "TacticValue", "AllowSparse", "Metadata", "Groups", "Kernel")
                     if k in row}
            if "Inputs" in row:
                extra["inputs"] = _formats(row.get("Inputs"))
            if "Outputs" in row:
                extra["outputs"] = _formats(row.get("Outputs"))
        else:
            continue
        if (names is not None and _matches(name, names)) or "sparse" in tactic.lower():
            sparse: bool | None = True
        else:
            sparse = False if names is not None else None
        out.append(LayerInfo(name=name, op_type=op, exec_type=tactic, sparse=sparse, extra=extra))
    return out


# -- files ---------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "unknown"


def cache_root() -> Path:
    return Path(os.environ.get("EDGEPRUNE_CACHE", Path.home() / ".cache" / "edgeprune"))


def timing_cache_path(profile_name: str | None, trt_version: str | None, gpu_name: str | None) -> Path:
    """Where the tactic timing cache lives: one per (device profile, TensorRT version, GPU), since a cache
    is only valid for the device and TensorRT version that made it."""
    name = f"{_slug(profile_name or 'generic')}__trt{_slug(trt_version or 'unknown')}__{_slug(gpu_name or 'unknown')}.cache"
    return cache_root() / "trt" / name


def sidecar_paths(artifact: str | os.PathLike) -> dict[str, Path]:
    """Files written beside the ONNX / engine: the engine, inspector JSON and build record."""
    p = Path(artifact)
    stem = p.with_suffix("")
    return {"engine": stem.with_suffix(".engine"), "inspector": Path(f"{stem}.inspector.json"),
            "build": Path(f"{stem}.trt-build.json")}


def check_input_shape(name: str, shape: Sequence[int], lo: Sequence[int] | None, hi: Sequence[int] | None) -> None:
    """Refuse a run shape outside the engine's optimization profile, naming the allowed range."""
    if lo is None or hi is None:
        return
    if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
        raise ConfigError(f"input '{name}' has shape {tuple(shape)}, the TensorRT engine accepts {tuple(lo)} .. {tuple(hi)}",
                          hint="rebuild with larger max shapes (options extra max_batch / max_seq_len / shapes)")


# -- sparse rules (HARDWARE.md §1c, §6): read by edgeprune.sparsity.support through the backend class ------------
SPARSE_CONSTRAINTS = ("2:4 only, groups of 4 consecutive input channels (C_in % 4 == 0)", "FP16 or INT8 weights",
                      "constant weights of Conv / MatMul / Gemm", "Ampere or newer GPU, --sparsity=enable")


def sparse_failures(layer, host, verdict: str, name: str) -> list[str]:
    """Conditions a layer (base.SparseLayer) or host (base.HostFacts) fails for TensorRT's sparse tactics."""
    from edgeprune.backends.base import GPU_PAYS_FROM

    fails = []
    if name not in host.installed or host.cuda is None:
        fails.append("no TensorRT/NVIDIA GPU on this host (not measured)")
    if layer.precision not in ("fp16", "int8"):
        fails.append(f"weights are {layer.precision}; TensorRT sparse tactics need an FP16 or INT8 build")
    if verdict == "yes" and min(layer.k, layer.out_ch) < GPU_PAYS_FROM:
        fails.append(f"K={layer.k}, N={layer.out_ch}: eligible, but TensorRT keeps the dense tactic when it is faster "
                     f"— at this size expect dense (prove with '(Sparsity) ... picked sparse implementation')")
    return fails

__all__ = [
    "LayerSparsity", "ShapeProfile", "BuildPlan", "check_sparse_eligibility", "onnx_precision", "onnx_inputs",
    "parse_device", "shape_profiles", "plan_build", "parse_sparsity_log", "parse_inspector_json",
    "timing_cache_path", "cache_root", "sidecar_paths", "check_input_shape", "SPARSE_OPS", "DEFAULTS",
]
