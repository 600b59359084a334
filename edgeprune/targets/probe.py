"""Probe this machine into a DeviceProfile named "host".

Reads /proc/cpuinfo, psutil, package metadata and (if present) nvidia-smi. It never imports onnxruntime,
openvino or tensorrt, and uses torch.cuda only when torch is already imported: probing must stay cheap and
must not load a runtime into a process that did not ask for one.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeprune import backends
from edgeprune.errors import ProfileError
from edgeprune.targets.schema import DeviceProfile

# cpuinfo flags that decide kernels and alignment; the rest (sse, vme, ...) would only be noise in a profile
RELEVANT_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                  "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
                  "asimd", "asimddp", "asimdhp", "fphp", "sve", "sve2", "i8mm", "bf16", "svei8mm", "svebf16")
_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "0x41": "Arm", "0x61": "Apple", "0x48": "HiSilicon",
            "0x51": "Qualcomm", "0xc0": "Ampere"}
_NVIDIA_SMI_TIMEOUT_S = 5


@dataclasses.dataclass(frozen=True)
class GpuFacts:
    name: str
    memory_bytes: int | None = None
    multiprocessors: int | None = None
    capability: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class ProbeFacts:
    """Raw observations; `profile_from_facts` turns them into a profile (split so rules can be tested anywhere)."""

    date: str
    system: str
    machine: str
    cpu: str
    vendor: str
    flags: frozenset[str]
    physical_cores: int
    logical_cores: int
    memory_bytes: int | None
    max_mhz: float | None
    runtimes: dict[str, str]  # runtime -> installed version
    gpus: tuple[GpuFacts, ...] = ()
    runtime_dists: dict[str, str] = dataclasses.field(default_factory=dict)  # runtime -> distribution name


def probe_host() -> DeviceProfile:
    """Profile of this machine: CPU flags, cores, memory, GPUs, installed runtimes (confidence M, dated)."""
    return profile_from_facts(gather_facts())


def gather_facts() -> ProbeFacts:
    import psutil

    cpu, vendor, flags = _cpuinfo()
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64") and not flags:
        flags = {"asimd"}  # NEON is mandatory in AArch64; macOS has no /proc/cpuinfo to say so
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    try:
        freq = psutil.cpu_freq()
        max_mhz = float(freq.max) if freq and freq.max and freq.max > 0 else None
    except Exception:  # psutil raises on some VMs/containers without cpufreq
        max_mhz = None
    try:
        memory = int(psutil.virtual_memory().total)
    except Exception:
        memory = None
    runtimes, dists = _runtimes()
    return ProbeFacts(date=_dt.date.today().isoformat(), system=f"{platform.system()} {platform.release()}".strip(),
                      machine=machine, cpu=cpu or platform.processor() or machine or "unknown CPU",
                      vendor=vendor or _vendor_from_name(cpu or platform.processor()), flags=frozenset(flags),
                      physical_cores=int(physical), logical_cores=int(logical), memory_bytes=memory,
                      max_mhz=max_mhz, runtimes=runtimes, gpus=_gpus(), runtime_dists=dists)


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, str, set[str]]:
    vendor, flags, names = "", set(), {}
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", vendor, flags
    for line in text.splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        lkey = key.lower()
        if lkey in ("flags", "features") and not flags:
            flags = set(value.lower().split())
        elif lkey in ("vendor_id", "cpu implementer") and not vendor:
            vendor = _VENDORS.get(value, value)
        elif value:
            names.setdefault(lkey, value)
    # x86 has a numeric "model" line before "model name"; Arm boards name themselves in "Model"/"Hardware"
    cpu = next((names[k] for k in ("model name", "cpu model", "hardware") if k in names), "")
    if not cpu and not names.get("model", "0").isdigit():
        cpu = names["model"]
    return cpu, vendor, flags


def _vendor_from_name(cpu: str) -> str:
    low = cpu.lower()
    return next((v for k, v in (("intel", "Intel"), ("amd", "AMD"), ("apple", "Apple"), ("arm", "Arm")) if k in low),
                "unknown")


def _runtimes() -> tuple[dict[str, str], dict[str, str]]:
    found, dists = {}, {}
    for cls in backends.backend_classes():  # each backend names the distributions that provide it
        runtime = cls.name
        for dist in cls.capabilities.dists or (cls.package,):
            try:
                found[runtime] = metadata.version(dist)
                dists[runtime] = dist
                break
            except metadata.PackageNotFoundError:
                continue
            except Exception:  # broken metadata of one package must not break the probe
                continue
    return found, dists


def _gpus() -> tuple[GpuFacts, ...]:
    torch = sys.modules.get("torch")
    if torch is not None:  # already paid for: ask CUDA directly
        try:
            if torch.cuda.is_available():
                out = []
                for i in range(torch.cuda.device_count()):
                    p = torch.cuda.get_device_properties(i)
                    out.append(GpuFacts(p.name, int(p.total_memory), int(p.multi_processor_count), (p.major, p.minor)))
                return tuple(out)
        except Exception:
            pass
    return _nvidia_smi()


def _nvidia_smi() -> tuple[GpuFacts, ...]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    # compute_cap needs a recent driver; fall back to the fields every driver knows
    for fields in ("name,memory.total,compute_cap", "name,memory.total"):
        try:
            run = subprocess.run([exe, f"--query-gpu={fields}", "--format=csv,noheader,nounits"], capture_output=True,
                                 text=True, timeout=_NVIDIA_SMI_TIMEOUT_S, check=False)
        except (OSError, subprocess.SubprocessError):
            return ()
        if run.returncode == 0:
            return tuple(g for g in (_smi_line(line) for line in run.stdout.splitlines() if line.strip()) if g)
    return ()


def _smi_line(line: str) -> GpuFacts | None:
    parts = [p.strip() for p in line.split(",")]
    if not parts or not parts[0]:
        return None
    memory = cap = None
    try:
        memory = int(float(parts[1]) * 2**20) if len(parts) > 1 else None  # MiB
    except ValueError:
        pass
    try:
        if len(parts) > 2:
            major, minor = parts[2].split(".")
            cap = (int(major), int(minor))
    except ValueError:
        pass
    return GpuFacts(parts[0], memory, None, cap)


# -- facts -> profile ---------------------------------------------------------------------------------

def _lanes(flags: frozenset[str]) -> tuple[int, str]:
    """FP32 SIMD lanes -> channel multiple (HARDWARE.md §7: AVX-512 16, AVX2 8, NEON 4)."""
    if "avx512f" in flags:
        return 16, "AVX-512"
    if "avx2" in flags:
        return 8, "AVX2"
    if "asimd" in flags or "neon" in flags:
        return 4, "NEON"
    return 1, "no SIMD flag seen"


def _precisions(f: frozenset[str], gpu: GpuFacts | None) -> list[str]:
    out = ["fp32"]
    if gpu and gpu.capability and gpu.capability >= (8, 0):
        out.append("tf32")
    if gpu or {"avx512_fp16", "amx_fp16", "fphp", "asimdhp"} & f:
        out.append("fp16")
    if (gpu and gpu.capability and gpu.capability >= (8, 0)) or {"avx512_bf16", "amx_bf16", "bf16"} & f:
        out.append("bf16")
    out.append("int8")  # INT8 (Q/DQ) runs everywhere; whether it is faster depends on VNNI/AMX/dotprod
    return out


def _channel(lanes: int, simd: str, precisions: list[str], src: str, gpu: bool) -> dict[str, Any]:
    by = {"fp32": lanes, "int8": 4 * lanes}
    for p in ("fp16", "bf16"):
        if p in precisions:
            by[p] = 2 * lanes
    reason = f"{simd}: {lanes} FP32 / {4 * lanes} INT8 lanes"
    if gpu:  # widths must suit both the CPU and the tensor cores (§7: FP16 x8, INT8 x16-32, TF32 x4)
        for p, m in (("fp16", 8), ("bf16", 8), ("int8", 32), ("tf32", 4), ("fp32", 4)):
            if p in precisions:
                by[p] = max(by.get(p, 1), m)
        reason += "; GPU tensor cores FP16 x8, INT8 x32, TF32 x4"
    return {"multiple": lanes, "by_precision": by, "reason": reason, "source": src, "confidence": "D"}


def _runtime_entries(facts: ProbeFacts, precisions: list[str], cpu_channel: dict, gpu_channel: dict,
                     src: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The profile's runtimes and patterns: each installed backend, described by its own class (default first)."""
    gpu = facts.gpus[0] if facts.gpus else None
    host = backends.HostView(facts.flags, gpu.capability if gpu else None, tuple(precisions), src)
    runtimes, patterns = [], {}
    order = [backends.DEFAULT, *(n for n in backends.names() if n != backends.DEFAULT)]
    for cls in (backends.get_backend_class(n) for n in order if n in facts.runtimes):
        version, dist = facts.runtimes[cls.name], facts.runtime_dists.get(cls.name, cls.name)
        on_gpu = bool(gpu) and cls.gpu_build(version, dist)
        if "cpu" not in cls.capabilities.devices and not on_gpu:
            continue  # installed but nothing here to run it on
        devices = [d for d in ("cpu", "gpu") if d in cls.capabilities.devices] if on_gpu else ["cpu"]
        runtimes.append({"name": cls.name, "min_version": _plain_version(version), "devices": devices,
                         "notes": f"installed {version} ({dist})", "source": f"{src}: importlib.metadata",
                         "confidence": "M"})
        patterns[cls.name] = {"channel": gpu_channel if on_gpu else cpu_channel, **cls.probe_patterns(host)}
    if not runtimes:
        raise ProfileError("probe found no inference runtime installed on this host",
                           hint=f"pip install {backends.get_backend_class(backends.DEFAULT).package} and probe again")
    return runtimes, patterns


def profile_from_facts(facts: ProbeFacts) -> DeviceProfile:
    from edgeprune.targets.validate import profile_from_mapping

    src = f"probe {facts.date}"
    f = facts.flags
    lanes, simd = _lanes(f)
    precisions = _precisions(f, facts.gpus[0] if facts.gpus else None)
    amx = {"amx_tile", "amx_int8"} <= f
    cpu_channel = _channel(lanes, simd, precisions, f"{src}: /proc/cpuinfo flags, HARDWARE.md §7", gpu=False)
    gpu_channel = _channel(lanes, simd, precisions, f"{src}: flags + GPU, HARDWARE.md §7", gpu=True)
    runtimes, patterns = _runtime_entries(facts, precisions, cpu_channel, gpu_channel, src)
    figures = _figures(facts, src)
    data: dict[str, Any] = {
        "name": "host", "vendor": facts.vendor, "kind": "cpu",
        "description": _describe(facts),
        "isa_features": sorted(f & set(RELEVANT_FLAGS)),
        "cores": max(1, facts.physical_cores),
        "peak": _derived_peak(facts, lanes, amx, src),
        "runtimes": runtimes, "precisions": precisions, "patterns": patterns,
        "constraints": {"static_shapes": False},
        "figures": figures,
        "provenance": {"cores": {"source": f"{src}: psutil physical cores", "confidence": "M"},
                       "isa_features": {"source": f"{src}: /proc/cpuinfo flags", "confidence": "M"},
                       "runtimes": {"source": f"{src}: importlib.metadata", "confidence": "M"}},
        "notes": ["memory bandwidth is not probed: use measured latency tables on this host"],
    }
    if facts.memory_bytes:
        data["memory"] = {"size": _fig(round(facts.memory_bytes / 2**30, 1), "GiB", f"{src}: psutil")}
    return profile_from_mapping(data, f"host probe ({facts.date})")


def _figures(facts: ProbeFacts, src: str) -> dict[str, Any]:
    figures: dict[str, Any] = {"logical_cores": _fig(facts.logical_cores, "threads", f"{src}: psutil")}
    if facts.max_mhz:
        figures["cpu_max_clock"] = _fig(round(facts.max_mhz / 1000, 3), "GHz", f"{src}: psutil.cpu_freq")
    for i, g in enumerate(facts.gpus):
        tag = f"gpu{i}"
        if g.memory_bytes:
            figures[f"{tag}_memory"] = _fig(round(g.memory_bytes / 2**30, 1), "GiB", f"{src}: {g.name}")
        if g.multiprocessors:
            figures[f"{tag}_multiprocessors"] = _fig(g.multiprocessors, "SMs", f"{src}: {g.name}")
        if g.capability:
            figures[f"{tag}_compute_capability"] = _fig(float(f"{g.capability[0]}.{g.capability[1]}"), "cc",
                                                        f"{src}: {g.name}")
    return figures


def _derived_peak(facts: ProbeFacts, lanes: int, amx: bool, src: str) -> dict[str, Any]:
    """Peak from HARDWARE.md §3 per-core formulas (2 FMA units assumed) x cores x max clock, only with a clock."""
    if not facts.max_mhz or lanes < 8:  # no clock, or an ISA without a formula in HARDWARE.md
        return {}
    ghz, cores = facts.max_mhz / 1000, max(1, facts.physical_cores)
    per_cycle = {"fp32": 4 * lanes}  # 2 FMA units x lanes x 2 ops
    if amx:
        per_cycle["int8"] = 2048
    elif "avx512_vnni" in facts.flags:
        per_cycle["int8"] = 256
    out = {}
    for prec, ops in per_cycle.items():
        value = round(cores * ops * ghz / 1000, 4)  # GOP/s -> TOPS
        unit = "TFLOPS" if prec == "fp32" else "TOPS"
        out[prec] = {"dense": {"value": value, "unit": unit, "confidence": "D",
                               "source": f"{src}: {cores} cores x {ops} OP/cycle x {ghz:.2f} GHz (HARDWARE.md §3 formula)"}}
    return out


def _fig(value: float, unit: str, source: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "source": source, "confidence": "M"}


def _plain_version(version: str) -> str | None:
    import re

    m = re.match(r"^\d+(\.\d+){0,4}", version)  # drop local tags like +cpu / +cu121
    return m.group(0) if m else None


def _describe(facts: ProbeFacts) -> str:
    mem = f", {facts.memory_bytes / 2**30:.1f} GiB" if facts.memory_bytes else ""
    text = (f"probed host: {facts.cpu}, {facts.physical_cores} cores / {facts.logical_cores} threads{mem}, "
            f"{facts.system} {facts.machine}")
    if facts.gpus:
        text += "; GPU: " + ", ".join(g.name for g in facts.gpus)
    return text + f" ({facts.date})"


__all__ = ["probe_host", "gather_facts", "profile_from_facts", "ProbeFacts", "GpuFacts"]
