"""Which runtime accelerates which pattern, under what constraints — and whether it does so *here*.

Rules follow HARDWARE.md §3, §6, §8 and our own GPU measurement (benchmarks/results/gpu_semi_structured.md).
Each backend class states its own rules (constraints, default verdict, per-layer failures); a DeviceProfile's
`accelerates` gives the device-level verdict when one is given; the layer's shape/precision and the host's
facts can only lower it.
Verdicts: "yes" (sparse kernels skip math), "memory-only" (smaller/bandwidth only), "no".
"""
from __future__ import annotations

import dataclasses
from typing import Any

from edgeprune.backends import Backend, backend_classes, host_facts
from edgeprune.backends.base import HostFacts, SparseLayer
from edgeprune.errors import ConfigError
from edgeprune.sparsity.patterns import NM, SparsityPattern
from edgeprune.targets.schema import DeviceProfile


@dataclasses.dataclass(frozen=True)
class Verdict:
    runtime: str
    verdict: str  # yes | memory-only | no
    reason: str
    constraints: tuple[str, ...] = ()
    evidence: str = ""  # what a run showed (perf-counter exec types, TensorRT sparsity log line), if measured

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _sparse_backends() -> dict[str, type[Backend]]:
    """Report name -> backend class (torch's sparse path is reported as its CUDA path)."""
    return {cls.sparse_name or cls.name: cls for cls in backend_classes()}


def sparse_runtimes() -> tuple[str, ...]:
    """The names verdicts are reported under, asked of the registry on each call (a registered backend counts)."""
    return tuple(_sparse_backends())


def _backend(runtime: str) -> type[Backend]:
    table = _sparse_backends()
    if runtime not in table:
        raise ConfigError(f"unknown runtime '{runtime}' for a sparsity verdict", hint=f"use one of {', '.join(table)}")
    return table[runtime]


def _layer(pattern: SparsityPattern, op: str = "", shape: tuple[int, int] = (0, 0), sparsity: float = 0.0,
           precision: str = "fp32", sparse_rate: float = 0.5) -> SparseLayer:
    is24 = isinstance(pattern, NM) and (pattern.n, pattern.m) == (2, 4)
    return SparseLayer(pattern.name, pattern.kind, is24, op, shape[0], shape[1], sparsity, precision, sparse_rate)


def constraints(pattern: SparsityPattern, runtime: str) -> tuple[str, ...]:
    """The documented conditions under which `runtime` uses this pattern at all."""
    return _backend(runtime).sparse_constraints()


def pattern_support(pattern: SparsityPattern, runtime: str, profile: DeviceProfile | None = None) -> Verdict:
    """Device-level verdict for a pattern: the profile's (one source of truth) when given, else the backend's
    documented default (HARDWARE.md §6)."""
    cls = _backend(runtime)
    cons = cls.sparse_constraints()
    if profile is not None:
        verdict, reason = profile.accelerates(cls.name, pattern.kind)
        return Verdict(runtime, str(verdict), f"profile {profile.name}: {reason}", cons)
    verdict, reason = cls.sparse_default(_layer(pattern))
    return Verdict(runtime, verdict, reason, cons)


def layer_verdict(pattern: SparsityPattern, runtime: str, *, op: str, matrix_shape: tuple[int, int], sparsity: float,
                  precision: str = "fp32", profile: DeviceProfile | None = None, host: HostFacts | None = None,
                  sparse_rate: float = 0.5) -> Verdict:
    """Verdict for one layer on `runtime` on this host: the device verdict lowered by every failed condition."""
    host = host or host_facts()
    base = pattern_support(pattern, runtime, profile)
    layer = _layer(pattern, op, matrix_shape, sparsity, precision, sparse_rate)
    fails = _backend(runtime).sparse_failures(layer, host, base.verdict)
    if base.verdict == "no" or not fails:
        return base
    return Verdict(runtime, "no", "; ".join(fails), base.constraints)


def compressed_bytes(pattern: SparsityPattern, numel: int, sparsity: float, precision: str = "fp32") -> int:
    """Bytes a runtime that stores only the kept values (plus index metadata) would need for this weight."""
    from edgeprune.precisions import bytes_per_element

    per_value = bytes_per_element(precision)  # int4 packs two values a byte: 0.5
    return int(round(pattern.compressed_bytes(numel, int(round(numel * (1 - sparsity))), per_value)))


__all__ = ["Verdict", "HostFacts", "sparse_runtimes", "constraints", "pattern_support", "layer_verdict", "compressed_bytes"]
