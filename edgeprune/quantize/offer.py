"""Which reduced precisions a Target can ship, and why: the runtime's Capabilities crossed with the device profile.

The runtime says what a precision needs to pay (Capabilities.precisions: CPU ISA flags such as VNNI/AMX, or a GPU
compute capability "sm_XY"); the profile says what the device has (kind, precisions, isa_features). On this
machine the candidates the profile lists are then measured (optimizer/precision.py): the facts explain a
measurement, they do not replace it. Off the host the facts alone decide, and nothing is timed.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeprune.targets.target import Target

# accelerators that run integer networks only (NPUs, DLAs, TPUs): INT8 is what they ship
INT8_ONLY_KINDS = ("npu", "dla", "tpu", "accelerator")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One reduced-precision artifact optimize can try: precision, how it is built, and whether the facts back it."""

    precision: str  # "int8" | "fp16" | ...
    label: str  # "dynamic INT8", "NNCF INT8", ...
    config_ref: str = ""  # "module:function" -> the quantizer config; "" = the quantizer's defaults
    offered: bool = True  # the device facts say it pays (see offered())
    reason: str = ""  # the facts behind `offered`

    def config(self) -> Any:
        if not self.config_ref:
            return None
        module, _, name = self.config_ref.partition(":")
        return getattr(importlib.import_module(module), name)()


def offered(target: Target, precision: str) -> tuple[bool, str]:
    """(does the device have fast kernels for `precision` on this runtime, the facts that say so)."""
    prof, caps, who = target.profile, target.capabilities, target.describe()
    kind = prof.kind.lower()
    if kind in INT8_ONLY_KINDS and precision != "int8":
        return False, f"{prof.name} is an {kind}: it runs INT8 networks, not {precision}"
    if precision not in prof.precisions:
        return False, f"{prof.name} lists no {precision} (its precisions: {', '.join(prof.precisions)})"
    if precision not in caps.precisions:
        return False, f"{target.runtime} has no {precision} kernels"
    needs = caps.precisions[precision]
    isa = [n for n in needs if not n.startswith("sm_")]
    gpu = [n for n in needs if n.startswith("sm_")]
    if kind == "cpu":
        if gpu and not isa:
            return False, f"{target.runtime} runs {precision} fast only on a GPU (needs {', '.join(gpu)}); {prof.name} is a CPU"
        if isa and not set(isa) & set(prof.isa_features):
            flags = ", ".join(prof.isa_features) or "none listed"
            return False, f"no {'/'.join(isa)} on {prof.name} (flags: {flags}): {precision} does not pay on {target.runtime}"
        return True, f"{precision} on {who}" + (f" ({'/'.join(sorted(set(isa) & set(prof.isa_features)))})" if isa else "")
    # GPUs and accelerators: the profile listing the precision is the device fact (compute capabilities are
    # not given by every profile); CPU ISA flags do not apply to them
    return True, f"{prof.name} ({kind}) lists {precision}"


def candidates(target: Target) -> list[Candidate]:
    """Every reduced-precision artifact the target's runtime offers (Capabilities.auto_candidates, in order), each
    with the device facts' verdict. Precisions the runtime cannot build (no quantizer) are left out."""
    caps = target.capabilities
    out = []
    for precision, label, ref in caps.auto_candidates:
        if precision not in caps.quantizers:
            continue
        ok, why = offered(target, precision)
        out.append(Candidate(precision, label, ref, ok, why))
    return out
