"""The host probe: a validated profile of this machine from its CPU flags, memory, GPUs and installed runtimes."""
from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune.errors import ProfileError
from edgeprune.targets.probe import GpuFacts, ProbeFacts, profile_from_facts, probe_host
from edgeprune.targets.profiles import load_profile, profile_from_text

def test_probe_host_validates_and_lists_installed_runtimes():
    host = probe_host()
    assert host.name == "host" and host.kind == "cpu" and host.cores >= 1
    assert "onnxruntime" in host.runtime_names()  # a hard dependency
    assert ("openvino" in host.runtime_names()) == (importlib.util.find_spec("openvino") is not None)
    assert host.runtime("onnxruntime").confidence == "M" and host.runtime("onnxruntime").source.startswith("probe ")
    assert host.memory.size.confidence == "M" and host.memory_bytes() > 2**28
    assert host.accelerates("onnxruntime", "unstructured")[0] == "no"
    assert profile_from_text(host.to_yaml(), "host.yaml") == host
    assert load_profile("host").name == "host"
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return
    line = next((l for l in cpuinfo.read_text().splitlines() if l.lower().startswith(("flags", "features"))), ":")
    flags = line.split(":", 1)[1].split()
    assert set(host.isa_features) <= set(flags) and (not flags or host.isa_features)
    expected = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4 if "asimd" in flags else 1
    assert host.channel_multiple("onnxruntime", "fp32") == expected


def _facts(**changes) -> ProbeFacts:
    base = ProbeFacts(date="2026-01-02", system="Linux 6", machine="x86_64", cpu="Test CPU", vendor="Intel",
                      flags=frozenset({"avx2", "fma"}), physical_cores=8, logical_cores=16, memory_bytes=16 * 2**30,
                      max_mhz=None, runtimes={"onnxruntime": "1.20.1", "openvino": "2024.4.0"})
    return dataclasses.replace(base, **changes)


def test_probe_rules_follow_the_cpu_flags():
    amx = profile_from_facts(_facts(flags=frozenset({"avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8",
                                                     "amx_bf16", "avx512_bf16"})))
    verdict, reason = amx.accelerates("openvino", "block")
    assert verdict == "memory-only" and "channels % 64" in reason
    assert amx.channel_multiple("onnxruntime", "fp32") == 16 and "bf16" in amx.precisions
    plain = profile_from_facts(_facts())
    assert plain.accelerates("openvino", "block") == ("no", plain.accelerates("openvino", "block")[1])
    assert "no AMX on this CPU" in plain.accelerates("openvino", "block")[1]
    assert plain.channel_multiple("openvino", "fp32") == 8 and plain.channel_multiple("openvino", "int8") == 32
    arm = profile_from_facts(_facts(machine="aarch64", vendor="Arm", flags=frozenset({"asimd", "asimddp", "fphp"})))
    assert arm.channel_multiple("onnxruntime", "fp32") == 4 and "fp16" in arm.precisions
    assert plain.peak == {}  # no clock: no derived peak


def test_probe_derives_peak_only_with_a_clock_and_marks_it_d():
    p = profile_from_facts(_facts(max_mhz=3000.0, flags=frozenset({"avx512f", "avx512_vnni"})))
    fp32 = p.peak["fp32"].dense
    assert fp32.confidence == "D" and fp32.value == pytest.approx(8 * 64 * 3.0 / 1000)  # 8 cores x 64 FLOP x 3 GHz
    assert p.peak["int8"].dense.value == pytest.approx(8 * 256 * 3.0 / 1000)
    assert p.figures["cpu_max_clock"].value == 3.0 and p.figures["cpu_max_clock"].confidence == "M"


def test_probe_with_an_ampere_gpu_and_tensorrt():
    gpu = GpuFacts("NVIDIA H100 80GB HBM3", 80 * 2**30, 132, (9, 0))
    p = profile_from_facts(_facts(gpus=(gpu,), runtimes={"onnxruntime": "1.20.1", "tensorrt": "10.3.0",
                                                         "torch": "2.5.0+cu124"}))
    assert p.runtime_names() == ["onnxruntime", "tensorrt", "torch"]
    assert p.accelerates("tensorrt", "2:4")[0] == "yes" and p.accelerates("torch", "2:4")[0] == "yes"
    assert p.accelerates("onnxruntime", "2:4")[0] == "no"
    assert p.runtime("torch").devices == ("cpu", "gpu") and p.runtime("torch").min_version == "2.5.0"
    assert p.channel_multiple("tensorrt", "fp16") == 16  # CPU lanes (AVX2 fp16 x16) and tensor cores (x8)
    assert p.figures["gpu0_multiprocessors"].value == 132 and "tf32" in p.precisions
    cpu_only = profile_from_facts(_facts(runtimes={"onnxruntime": "1.20.1", "tensorrt": "10.3.0"}))
    assert "tensorrt" not in cpu_only.runtime_names()  # installed, but no GPU to run it on


def test_probe_without_runtimes_is_a_profile_error():
    with pytest.raises(ProfileError, match="no inference runtime"):
        profile_from_facts(_facts(runtimes={}))


def test_probe_imports_no_runtime():
    code = ("import sys, edgeprune.targets.probe, edgeprune.targets.profiles as p; p.load_profile('host'); p.list_profiles(); "
            "print(sorted(m for m in ('onnxruntime', 'openvino', 'tensorrt', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
