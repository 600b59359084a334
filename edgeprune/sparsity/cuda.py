"""PyTorch on CUDA: swap eligible 2:4 Linear weights to semi-structured sparse tensors (cuSPARSELt / CUTLASS).

A Linear is swapped when its weight (out, in) holds 2:4 along `in`, is fp16/bf16/int8 on a GPU of compute
capability >= 8.0, and its shape meets torch's minimum multiples. Whether a sparse kernel *ran* is read from
the profiler's CUDA kernel names (`sparse_kernels`), not assumed; whether it *paid* is a timing question
(our H100 measurement: only very large GEMMs gain, see edgeprune.backends.base.GPU_EVIDENCE).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from edgeprune.errors import BackendUnavailable
from edgeprune.sparsity.patterns import NM
from edgeprune.backends.pt import SEMI_SHAPE


@dataclasses.dataclass(frozen=True)
class SwapResult:
    name: str
    shape: tuple[int, int]
    swapped: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def why_not_cuda() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to PyTorch"
    cap = torch.cuda.get_device_capability(0)
    if cap < (8, 0):
        return f"{torch.cuda.get_device_name(0)} has compute capability {cap}; semi-structured sparsity needs >= 8.0"
    return None


def swap_semi_structured(model: nn.Module, ignore: tuple[str, ...] = ()) -> list[SwapResult]:
    """In place: every eligible Linear's weight becomes a SparseSemiStructuredTensor. Returns one row per Linear."""
    import fnmatch

    from torch.sparse import to_sparse_semi_structured

    reason = why_not_cuda()
    if reason:
        raise BackendUnavailable(f"cannot swap to semi-structured sparse weights: {reason}")
    rows = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or any(fnmatch.fnmatchcase(name, p) for p in ignore):
            continue
        w = mod.weight
        shape = tuple(w.shape)
        why = None
        if w.device.type != "cuda":
            why = f"weight is on {w.device}, not cuda"
        elif str(w.dtype).replace("torch.", "") not in ("float16", "bfloat16", "int8"):
            why = f"weight dtype {w.dtype}: use model.half() (fp16/bf16/int8 only)"
        elif not NM(2, 4).check(w.detach().float().cpu()).ok:
            why = "weight does not hold 2:4 along the input dim"
        else:
            r, c = SEMI_SHAPE[str(w.dtype).replace("torch.", "")]
            if shape[0] % r or shape[1] % c:
                why = f"shape {shape[0]}x{shape[1]} is not a multiple of {r}x{c}"
        if why is None:
            try:
                mod.weight = nn.Parameter(to_sparse_semi_structured(w.detach()), requires_grad=False)
            except (RuntimeError, ValueError) as err:  # the library refuses this shape/dtype: say so, keep dense
                why = f"to_sparse_semi_structured refused: {str(err).splitlines()[0]}"
        rows.append(SwapResult(name, shape, why is None, why or ""))
    return rows


def sparse_kernels(fn: Callable[[], Any]) -> list[str]:
    """Names of the CUDA kernels `fn` launched that are sparse GEMMs (evidence a 2:4 kernel ran)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = {e.key for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA}
    return sorted(n for n in names if "sparse" in n.lower() or "_sp_" in n.lower())


__all__ = ["SwapResult", "swap_semi_structured", "sparse_kernels", "why_not_cuda"]
