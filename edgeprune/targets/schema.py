"""Device profile schema: what a device and its runtimes accelerate, with a source on every figure.

The shape and the cross-field rules live here so that a profile built in code (the host probe) is
checked exactly like a YAML file; `edgeprune.targets.profiles` turns validation errors into one ProfileError line.
Facts come from docs/HARDWARE.md; its confidence marks travel with each figure:
V = vendor/primary document, M = measured, D = derived by a stated formula, unconfirmed = anything else.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Iterable, Literal, Optional

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from edgeprune.errors import ProfileError
from edgeprune.targets.types import (BANDWIDTH_UNITS, COMPUTE_UNITS, CONFIDENCES, KINDS, PATTERN_KINDS, PRECISIONS,
                                     SIZE_UNITS, VERDICTS, Confidence, DeviceName, FigureKey, Fraction,
                                     PosInt, Precision, RuntimeName, Text, Token, Verdict, Version, check_profile_name,
                                     canonical_precision, canonical_runtime)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Sourced(_Frozen):
    """A claim with where it comes from; only 'unconfirmed' may come without a source."""

    source: Optional[Text] = None
    confidence: Confidence = "unconfirmed"

    @model_validator(mode="after")
    def _sourced(self):
        if self.source is None and self.confidence != "unconfirmed":
            raise PydanticCustomError("unsourced", "confidence {c} needs a 'source' (a claim without one must say "
                                      "confidence: unconfirmed)", {"c": self.confidence})
        return self

    def provenance(self) -> str:
        return f"{self.confidence}, {self.source}" if self.source else self.confidence


class Provenance(_Sourced):
    """Source and confidence of a plain field (cores, isa_features, ...)."""

    confidence: Confidence


class Figure(_Sourced):
    """A number with its unit and provenance, e.g. {value: 204.8, unit: GB/s, source: ..., confidence: unconfirmed}."""

    value: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
    unit: Text
    confidence: Confidence  # required: the reader must see how far to trust the number
    note: Optional[Text] = None

    def scaled(self, units: dict[str, float]) -> float:
        return self.value * units[self.unit]


class ComputeFigure(Figure):
    unit: Literal[tuple(COMPUTE_UNITS)]

    def per_second(self) -> float:
        return self.scaled(COMPUTE_UNITS)


class BandwidthFigure(Figure):
    unit: Literal[tuple(BANDWIDTH_UNITS)]

    def per_second(self) -> float:
        return self.scaled(BANDWIDTH_UNITS)


class SizeFigure(Figure):
    unit: Literal[tuple(SIZE_UNITS)]

    def bytes(self) -> float:
        return self.scaled(SIZE_UNITS)


class Memory(_Frozen):
    size: Optional[SizeFigure] = None
    bandwidth: Optional[BandwidthFigure] = None
    technology: Optional[Text] = None


class PeakEntry(_Frozen):
    dense: Optional[ComputeFigure] = None
    sparse: Optional[ComputeFigure] = None  # NVIDIA quotes 2:4 sparse peaks at 2x dense

    @model_validator(mode="after")
    def _consistent(self):
        if self.dense is None and self.sparse is None:
            raise PydanticCustomError("peak_empty", "give a 'dense' and/or 'sparse' figure", {})
        if self.dense and self.sparse and self.sparse.per_second() < self.dense.per_second():
            raise PydanticCustomError("peak_order", "sparse peak {s} {su} is below dense peak {d} {du}",
                                      {"s": self.sparse.value, "su": self.sparse.unit, "d": self.dense.value,
                                       "du": self.dense.unit})
        return self


class RuntimeSpec(_Sourced):
    name: RuntimeName
    min_version: Optional[Version] = None
    devices: tuple[DeviceName, ...] = ()
    notes: Optional[Text] = None


class ChannelRule(_Sourced):
    """Round pruned widths up to `multiple` (or the precision's entry in `by_precision`)."""

    multiple: PosInt = 1
    by_precision: dict[Precision, PosInt] = {}
    reason: Optional[Text] = None


class _SparseRule(_Sourced):
    accelerated: Verdict
    precisions: tuple[Precision, ...] = ()  # empty: not restricted
    devices: tuple[DeviceName, ...] = ()
    min_channels_multiple: Optional[PosInt] = None
    min_sparsity: Optional[Fraction] = None
    requires: tuple[Token, ...] = ()  # ISA features the device must list (e.g. amx_int8)
    conditions: tuple[Text, ...] = ()
    reason: Optional[Text] = None

    def describe(self, label: str) -> str:
        parts = [self.reason or f"{label}: {self.accelerated}"]
        facts = []
        if self.precisions:
            facts.append("precisions " + ", ".join(self.precisions))
        if self.devices:
            facts.append("on " + ", ".join(self.devices))
        if self.requires:
            facts.append("needs " + ", ".join(self.requires))
        if self.min_channels_multiple:
            facts.append(f"channels % {self.min_channels_multiple}")
        if self.min_sparsity is not None:
            facts.append(f"zeros >= {self.min_sparsity:.0%}")
        facts.extend(self.conditions)
        if facts:
            parts.append("[" + "; ".join(facts) + "]")
        parts.append(f"({self.provenance()})")
        return " ".join(parts)


class NMRule(_SparseRule):
    n: Optional[PosInt] = None  # n and m left out: any N:M pattern (only the share of zeros matters)
    m: Optional[PosInt] = None

    @model_validator(mode="after")
    def _n_below_m(self):
        if (self.n is None) != (self.m is None):
            raise PydanticCustomError("nm_pair", "give both 'n' and 'm', or neither (any N:M)", {})
        if self.n is not None and self.n >= self.m:
            raise PydanticCustomError("nm_order", "n must be smaller than m (n non-zeros in every m), got {n}:{m}",
                                      {"n": self.n, "m": self.m})
        return self


class BlockRule(_SparseRule):
    shapes: tuple[tuple[PosInt, PosInt], ...] = ()  # empty: any block shape


class UnstructuredRule(_SparseRule):
    pass


class RuntimePatterns(_Frozen):
    channel: Optional[ChannelRule] = None
    nm: Optional[NMRule] = None
    block: Optional[BlockRule] = None
    unstructured: Optional[UnstructuredRule] = None

    def sparse_rules(self) -> dict[str, _SparseRule]:
        return {k: r for k in ("nm", "block", "unstructured") if (r := getattr(self, k)) is not None}


class Constraints(_Sourced):
    static_shapes: Annotated[bool, Field(strict=True)] = False
    max_batch: Optional[PosInt] = None
    max_channels: Optional[PosInt] = None
    max_kernel: Optional[PosInt] = None
    max_stride: Optional[PosInt] = None
    max_dim: Optional[PosInt] = None
    unsupported_ops: tuple[Text, ...] = ()
    notes: tuple[Text, ...] = ()


class DeviceProfile(_Frozen):
    """One target device. `cores` counts the units that run the model: CPU cores (cpu), streaming
    multiprocessors (gpu), NPU cores/engines (npu). `peak` is per precision; `figures` holds other sourced
    numbers (TDP, clocks, module totals); `provenance` gives source/confidence for plain fields like cores."""

    name: Annotated[str, Field(strict=True, min_length=1, max_length=64), AfterValidator(check_profile_name)]
    vendor: Text
    kind: Literal[KINDS]
    description: Text
    isa_features: tuple[Token, ...] = ()
    cores: Optional[PosInt] = None
    memory: Optional[Memory] = None
    peak: dict[Precision, PeakEntry] = {}
    runtimes: Annotated[tuple[RuntimeSpec, ...], Field(min_length=1)]  # in order of preference
    precisions: Annotated[tuple[Precision, ...], Field(min_length=1)]
    patterns: dict[RuntimeName, RuntimePatterns] = {}
    constraints: Constraints = Constraints()
    figures: dict[FigureKey, Figure] = {}
    provenance: dict[FigureKey, Provenance] = {}
    notes: tuple[Text, ...] = ()

    @model_validator(mode="after")
    def _consistent(self):
        problems = _cross_problems(self)
        if problems:
            raise PydanticCustomError("profile_consistency", "{details}",
                                      {"details": "; ".join(f"field '{p}': {m}" for p, m in problems),
                                       "problems": problems})
        return self

    # -- questions later stages ask -------------------------------------------------------------

    def runtime_names(self) -> list[str]:
        return [r.name for r in self.runtimes]

    def runtime(self, name: str) -> RuntimeSpec | None:
        key = canonical_runtime(name)
        return next((r for r in self.runtimes if r.name == key), None)

    def preferred_runtime(self, installed: Iterable[str]) -> str | None:
        """The first of this device's runtimes (in preference order) that is in `installed`."""
        have = {canonical_runtime(n) for n in installed}
        return next((r.name for r in self.runtimes if r.name in have), None)

    def channel_multiple(self, runtime: str | None = None, precision: str = "fp32") -> int:
        """Width multiple for dense channel pruning. No runtime: the preferred one. A runtime this device
        does not list: the largest multiple over its runtimes (widths aligned for every one of them)."""
        prec = canonical_precision(precision)
        if runtime is None:
            names = self.runtime_names()[:1]
        else:
            key = canonical_runtime(runtime)
            names = [key] if key in self.runtime_names() else self.runtime_names()
        return max(self._multiple(n, prec) for n in names)

    def _multiple(self, runtime: str, precision: str) -> int:
        rule = self.patterns[runtime].channel if runtime in self.patterns else None
        if rule is None:
            return 1
        return rule.by_precision.get(precision, rule.multiple)

    def accelerates(self, runtime: str, pattern: str) -> tuple[str, str]:
        """("yes" | "memory-only" | "no", reason) for a pattern: '2:4' (any 'n:m' digits), 'n:m' (an N:M other
        than the one a runtime names), 'block', 'unstructured' or 'channel'."""
        kind, n, m = _parse_pattern(pattern)
        key = canonical_runtime(runtime)
        if key not in self.runtime_names():
            return "no", f"{runtime} is not a runtime of {self.name} (listed: {', '.join(self.runtime_names())})"
        if kind == "channel":
            mult = self.channel_multiple(key)
            return "yes", f"channel pruning shrinks the dense model on every runtime; round widths to multiples of {mult}"
        pats = self.patterns.get(key)
        rule = getattr(pats, kind) if pats else None
        label = f"{n}:{m}" if n else {"nm": "other N:M patterns"}.get(kind, kind)
        if rule is None:
            return "no", f"{self.name} lists no {kind} sparsity rule for {key}: weights run dense"
        if kind == "nm" and rule.n is not None and (n, m) != (rule.n, rule.m) and rule.accelerated != "no":
            return "no", f"{key} on {self.name} accelerates only {rule.n}:{rule.m}, not {label}"
        return rule.accelerated, rule.describe(label)

    def peak_ops(self, precision: str, sparse: bool = False) -> float | None:
        """Peak operations per second for a precision (dense, or 2:4-sparse), None when not known."""
        entry = self.peak.get(canonical_precision(precision))
        fig = (entry.sparse if sparse else entry.dense) if entry else None
        return fig.per_second() if fig else None

    def bandwidth_bytes_per_s(self) -> float | None:
        bw = self.memory.bandwidth if self.memory else None
        return bw.per_second() if bw else None

    def memory_bytes(self) -> float | None:
        size = self.memory.size if self.memory else None
        return size.bytes() if size else None

    def confidence_of(self, field: str) -> str:
        entry = self.provenance.get(field)
        return entry.confidence if entry else "unconfirmed"

    # -- serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict without empty/None fields, each figure's source and confidence last (easier to read)."""
        return _tidy(self.model_dump(mode="json", exclude_none=True))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=120)


def _tidy(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_tidy(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: _tidy(v) for k, v in obj.items() if v != [] and v != {}}
    for key in ("source", "confidence"):
        if key in out:
            out[key] = out.pop(key)
    return out


def _parse_pattern(pattern: Any) -> tuple[str, int | None, int | None]:
    text = str(pattern).strip().lower()
    nm = re.fullmatch(r"(\d+)\s*:\s*(\d+)", text)
    if nm:
        return "nm", int(nm.group(1)), int(nm.group(2))
    key = {"n:m": "nm", "nm": "nm", "structured": "channel", "channels": "channel"}.get(text, text)
    if key not in PATTERN_KINDS:
        raise ProfileError(f"unknown sparsity pattern '{pattern}'",
                           hint="ask about '2:4' (or other N:M digits), 'n:m', 'block', 'unstructured' or 'channel'")
    return key, None, None


def _cross_problems(p: DeviceProfile) -> list[tuple[str, str]]:
    """Rules that span fields; each problem is (field path, message)."""
    out: list[tuple[str, str]] = []
    names = p.runtime_names()
    for i, name in enumerate(names):
        if name in names[:i]:
            out.append((f"runtimes.{i}.name", f"runtime '{name}' is listed twice"))
    for i, prec in enumerate(p.precisions):
        if prec in p.precisions[:i]:
            out.append((f"precisions.{i}", f"precision '{prec}' is listed twice"))
    for prec in p.peak:
        if prec not in p.precisions:
            out.append((f"peak.{prec}", f"peak given for '{prec}', which is not in precisions {list(p.precisions)}"))
    for key in p.provenance:
        if key not in DeviceProfile.model_fields or key == "provenance":
            out.append((f"provenance.{key}", f"'{key}' is not a profile field"))
    features = set(p.isa_features)
    for rt, pats in p.patterns.items():
        if rt not in names:
            out.append((f"patterns.{rt}", f"patterns for runtime '{rt}', which is not in runtimes {names}"))
            continue
        if pats.channel:
            for prec in pats.channel.by_precision:
                if prec not in p.precisions:
                    out.append((f"patterns.{rt}.channel.by_precision.{prec}", f"'{prec}' is not in precisions"))
        rt_devices = set(p.runtime(rt).devices)
        for kind, rule in pats.sparse_rules().items():
            where = f"patterns.{rt}.{kind}"
            for prec in rule.precisions:
                if prec not in p.precisions:
                    out.append((f"{where}.precisions", f"'{prec}' is not in precisions {list(p.precisions)}"))
            if rule.accelerated != "no":
                missing = [f for f in rule.requires if f not in features]
                if missing:
                    out.append((f"{where}.requires", f"needs {missing}, not in isa_features (say accelerated: no)"))
            extra = [d for d in rule.devices if rt_devices and d not in rt_devices]
            if extra:
                out.append((f"{where}.devices", f"{extra} not among runtime '{rt}' devices {sorted(rt_devices)}"))
    return out


__all__ = ["DeviceProfile", "Figure", "ComputeFigure", "BandwidthFigure", "SizeFigure", "Memory", "PeakEntry",
           "Provenance", "RuntimeSpec", "RuntimePatterns", "ChannelRule", "NMRule", "BlockRule", "UnstructuredRule", "Constraints",
           "PRECISIONS", "KINDS", "CONFIDENCES", "VERDICTS", "canonical_runtime", "canonical_precision"]
