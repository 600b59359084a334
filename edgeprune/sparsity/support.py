"""Which runtime accelerates which pattern, under what constraints — and whether it does so *here*.

Rules follow HARDWARE.md §3, §6, §8 and our own GPU measurement (benchmarks/results/gpu_semi_structured.md).
A device profile (edgeprune.targets.profiles, any object with `accelerates(runtime, pattern) -> (verdict, reason)`)
gives the device-level verdict; the layer's shape/precision and the host's facts can only lower it.
Verdicts: "yes" (sparse kernels skip math), "memory-only" (smaller/bandwidth only), "no".
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path
from typing import Any

from edgeprune.sparsity.patterns import NM, SparsityPattern

RUNTIMES = ("onnxruntime", "openvino", "tensorrt", "torch-cuda")
_RANK = {"no": 0, "memory-only": 1, "yes": 2}
# torch.sparse semi-structured minimum/multiple (rows, cols) of the dense weight, per dtype
_SEMI_SHAPE = {"float16": (32, 64), "bfloat16": (32, 64), "int8": (32, 128), "float32": (32, 32)}
# measured on H100, fp16, cuSPARSELt (benchmarks/results/gpu_semi_structured.md): 2:4 beat dense only at 8192^3
_PAYS_FROM = 8192
GPU_EVIDENCE = ("H100 fp16 cuSPARSELt: MiniLM FFN 128x384x1536 0.03x of dense, LLaMA-7B MLP 2048x4096x11008 0.42x, "
                "8192^3 1.38x (benchmarks/results/gpu_semi_structured.md)")


@dataclasses.dataclass(frozen=True)
class Verdict:
    runtime: str
    verdict: str  # yes | memory-only | no
    reason: str
    constraints: tuple[str, ...] = ()
    evidence: str = ""  # what a run showed (perf-counter exec types, TensorRT sparsity log line), if measured

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class HostFacts:
    """What this machine can run: AMX (OpenVINO sparse weights), CUDA (torch 2:4), TensorRT."""

    amx: bool
    cuda: str | None  # device name, or None
    cuda_capability: tuple[int, int] | None
    tensorrt: bool
    cpu: str = ""

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def probe() -> "HostFacts":
        import torch

        flags, cpu = set(), ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                if line.startswith("model name") and not cpu:
                    cpu = line.split(":", 1)[1].strip()
        except OSError:
            pass
        cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        cap = torch.cuda.get_device_capability(0) if cuda else None
        return HostFacts("amx_tile" in flags, cuda, cap, importlib.util.find_spec("tensorrt") is not None, cpu)


def constraints(pattern: SparsityPattern, runtime: str) -> tuple[str, ...]:
    """The documented conditions under which `runtime` uses this pattern at all."""
    if runtime == "tensorrt":
        return ("2:4 only, groups of 4 consecutive input channels (C_in % 4 == 0)", "FP16 or INT8 weights",
                "constant weights of Conv / MatMul / Gemm", "Ampere or newer GPU, --sparsity=enable")
    if runtime == "torch-cuda":
        return ("2:4 only, Linear weights", "fp16/bf16 (rows % 32, cols % 64) or int8 (rows % 32, cols % 128)",
                "compute capability >= 8.0", "pays only for large GEMMs (" + GPU_EVIDENCE + ")")
    if runtime == "openvino":
        return ("INT8 model, MatMul/FullyConnected only", "CPU with Intel AMX", "input and output channels % 64",
                "zero fraction above CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE", "memory-bandwidth gain, not skipped math")
    return ("no sparse kernel: MatMul/Gemm/Conv run dense",)


def pattern_support(pattern: SparsityPattern, runtime: str, profile: Any = None) -> Verdict:
    """Device-level verdict for a pattern (profile's if given, else the HARDWARE.md §6 default)."""
    cons = constraints(pattern, runtime)
    if profile is not None and hasattr(profile, "accelerates"):
        key = "torch" if runtime == "torch-cuda" else runtime
        try:
            verdict, reason = profile.accelerates(key, pattern.kind)
            return Verdict(runtime, str(verdict), f"profile {getattr(profile, 'name', '?')}: {reason}", cons)
        except Exception as err:  # a profile that does not know this runtime/pattern: fall back, say so
            note = f" (profile gave no verdict: {type(err).__name__}: {err})"
    else:
        note = ""
    is24 = isinstance(pattern, NM) and (pattern.n, pattern.m) == (2, 4)
    if runtime in ("tensorrt", "torch-cuda"):
        if is24:
            return Verdict(runtime, "yes", "2:4 sparse tensor cores (Ampere+)" + note, cons)
        return Verdict(runtime, "no", f"NVIDIA sparse tensor cores read only 2:4, not {pattern.name}" + note, cons)
    if runtime == "openvino":
        return Verdict(runtime, "memory-only", "OpenVINO CPU sparse weights decompression (INT8, AMX): any zero pattern" + note, cons)
    return Verdict(runtime, "no", "ONNX Runtime CPU densifies weights: MatMul/Gemm/Conv run dense, zeros are multiplied" + note, cons)


def layer_verdict(pattern: SparsityPattern, runtime: str, *, op: str, matrix_shape: tuple[int, int], sparsity: float,
                  precision: str = "fp32", profile: Any = None, host: HostFacts | None = None,
                  sparse_rate: float = 0.5) -> Verdict:
    """Verdict for one layer on `runtime` on this host: the device verdict lowered by every failed condition."""
    host = host or HostFacts.probe()
    base = pattern_support(pattern, runtime, profile)
    out_ch, k = matrix_shape
    fails: list[str] = []
    if runtime == "openvino":
        if not host.amx:
            fails.append("no AMX on this CPU (amx_tile absent from /proc/cpuinfo): sparse weights decompression unavailable")
        if precision != "int8":
            fails.append(f"weights are {precision}; sparse weights decompression needs an INT8 (Q/DQ) model")
        if op.startswith("Conv") and not op.startswith("Conv1D"):
            fails.append("Conv is not FullyConnected/MatMul")
        if out_ch % 64 or k % 64:
            fails.append(f"IC={k}, OC={out_ch} not both multiples of 64")
        if sparsity <= sparse_rate:
            fails.append(f"zero fraction {sparsity:.0%} not above the decompression rate {sparse_rate:.0%}")
    elif runtime == "tensorrt":
        if not host.tensorrt or host.cuda is None:
            fails.append("no TensorRT/NVIDIA GPU on this host (not measured)")
        if precision not in ("fp16", "int8"):
            fails.append(f"weights are {precision}; TensorRT sparse tactics need an FP16 or INT8 build")
        if base.verdict == "yes" and min(k, out_ch) < _PAYS_FROM:
            fails.append(f"K={k}, N={out_ch}: eligible, but TensorRT keeps the dense tactic when it is faster — at this "
                         f"size expect dense (prove with '(Sparsity) ... picked sparse implementation')")
    elif runtime == "torch-cuda":
        if host.cuda is None:
            fails.append("no CUDA GPU on this host")
        elif host.cuda_capability and host.cuda_capability < (8, 0):
            fails.append(f"{host.cuda} has compute capability {host.cuda_capability} < 8.0")
        if op != "Linear":
            fails.append(f"{op}: to_sparse_semi_structured swaps Linear weights only")
        rows, cols = _SEMI_SHAPE.get(precision if precision != "fp32" else "float16", (32, 64))
        if out_ch % rows or k % cols:
            fails.append(f"weight {out_ch}x{k} not a multiple of {rows}x{cols}")
        if base.verdict == "yes" and min(k, out_ch) < _PAYS_FROM:
            fails.append(f"K={k} too small for a sparse kernel to pay ({GPU_EVIDENCE})")
    if base.verdict == "no" or not fails:
        return base
    return Verdict(runtime, "no", "; ".join(fails), base.constraints)


def compressed_bytes(pattern: SparsityPattern, numel: int, sparsity: float, precision: str = "fp32") -> int:
    """Bytes a runtime that stores only the kept values (plus index metadata) would need for this weight."""
    per_value = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}.get(precision, 4)
    return pattern.compressed_bytes(numel, int(round(numel * (1 - sparsity))), per_value)


__all__ = ["Verdict", "HostFacts", "RUNTIMES", "constraints", "pattern_support", "layer_verdict", "compressed_bytes"]
