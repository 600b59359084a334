"""Block-local reconstruction (docs/METHODS.md §9, "Block-local reconstruction").

For each pruned block b in forward order: feed it the *student's* input (the output of the already-recovered
blocks before it, so errors do not pile up) and train only block b to reproduce the dense block's output.
One step touches one block: about 1/L of an end-to-end step, and it converges in far fewer steps.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgeprune.recover.blocks import block_io, first_tensor
from edgeprune.recover.loop import LoopOutcome, Say, run_loop, step_generator
from edgeprune.recover.losses import normalised_mse


def _cache(student: nn.Module, teacher: nn.Module, name: str, batches: Sequence[tuple]) -> list[tuple]:
    """[(student's (args, kwargs) into block `name`, dense block output)] per batch; forward only up to the block."""
    return [(block_io(student, name, b, "input"), block_io(teacher, name, b, "output")) for b in batches]


def reconstruct_blocks(student: nn.Module, teacher: nn.Module, names: list[str], batches: Sequence[tuple], *,
                       lr: float, budget_s: float, seed: int, say: Say) -> list[LoopOutcome]:
    """Fit each block of `names` in turn, budget_s split evenly; the student stays in eval mode (BN frozen).

    `batches` are the (already augmented, if images) training inputs the caches are built from. Returns one
    LoopOutcome per block; a block whose loss turns non-finite is restored to its state before its fit."""
    outcomes = []
    mods = dict(student.named_modules())
    student.eval()
    for i, name in enumerate(names):
        cache = _cache(student, teacher, name, batches)
        block = mods[name]
        params = [p for p in block.parameters() if p.is_floating_point()]
        if not params:
            continue
        before = {k: v.clone() for k, v in block.state_dict().items()}

        def step_loss(step: int, cache=cache, block=block) -> torch.Tensor:
            j = int(torch.randint(0, len(cache), (1,), generator=step_generator(seed + i, step)))
            (args, kwargs), target = cache[j]
            return normalised_mse(first_tensor(block(*args, **kwargs)), target)

        # the inputs are cached and detached: only this block's parameters receive gradients
        outcome, _ = run_loop(params, step_loss, lr=lr, budget_s=budget_s / (len(names) - i), max_steps=None,
                              label=f"recovering block {i + 1}/{len(names)} ({name})", say=say)
        if outcome.stopped == "nan":
            block.load_state_dict(before)
        outcomes.append(outcome)
        budget_s -= outcome.seconds
    return outcomes
