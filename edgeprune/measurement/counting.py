"""MACs and parameter counts for reports: `count(model, example_inputs) -> Counts(macs, params)`.

Why FlopCounterMode and not module hooks: it counts at the aten level, so every matmul that runs is
seen — Linear, Conv, the Q·Kᵀ and P·V batched matmuls inside attention, SDPA, GPT-2's Conv1D (addmm) —
without a table of module types, and pruned shapes are read from the real tensors. It counts
multiply-adds of matmul/conv ops only (elementwise ops, norms and softmax are not MACs), which is the
usual definition behind published MAC numbers. MACs = FLOPs / 2.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch


@dataclasses.dataclass(frozen=True)
class Counts:
    macs: int     # multiply-accumulates of one forward pass on example_inputs
    params: int   # unique parameters (shared/tied tensors counted once)

    def ratio(self, other: "Counts") -> tuple[float, float]:
        """(macs, params) of self relative to `other` (e.g. pruned vs dense)."""
        return self.macs / max(other.macs, 1), self.params / max(other.params, 1)

    def __str__(self) -> str:
        return f"{self.macs / 1e6:.2f} MMACs, {self.params / 1e6:.3f} M params"


def count_params(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def count(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor) -> Counts:
    """Count MACs of one forward pass on `example_inputs` and the model's parameters."""
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(*example_inputs)
    finally:
        model.train(was_training)
    return Counts(int(counter.get_total_flops()) // 2, count_params(model))
