"""Groups whose channels Torch-Pruning couples through a permutation as if it were the identity.

Why this exists: Torch-Pruning's tracer treats a transpose or permute between two reshapes as an element-wise op.
A channel shuffle (ShuffleNet: view(b, g, c/g, h, w) -> transpose(1, 2) -> reshape(b, c, h, w)) then couples
producer channel j with consumer channel j, while the data actually moves channel j to position
(j % (c/g)) * g + j // (c/g). The pruned model runs and exports, yet it is wired differently from the dense
model: a silent error that the breaking-group probe cannot see. So each group that has such an op is checked
semantically: removing its units on a copy (no compensation) must give exactly the dense model's output with
those units masked at the inputs of the group's consumers. A group that fails is left whole.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from edgeprune.outputs import flatten_outputs

# grad_fn names (Torch-Pruning's element-wise pseudo-ops) that can move channels to other positions
REORDERING = ("Transpose", "Permute", "ChannelShuffle", "PixelShuffle", "PixelUnshuffle")
# channel-normalizing layers: removing a channel changes the statistics of the others, so masking != removal
NORMALIZING = (nn.LayerNorm, nn.GroupNorm)


def reorders(tp_group) -> bool:
    """True when a Torch-Pruning group passes through an op that may permute its channels and holds no
    channel-normalizing layer (with one, masking is not removal and the check cannot decide)."""
    items = tp_group.items
    if any(isinstance(item.dep.target.module, NORMALIZING) for item in items):
        return False
    return any(any(k in str(item.dep.target.name) for k in REORDERING) for item in items)


def masked_outputs(model: nn.Module, example_inputs: tuple, group, units: list[int]) -> list[torch.Tensor]:
    """Dense outputs with the removed units zeroed where each consumer reads them (channel dim 1 of a conv's
    input, the last dim of a Linear's)."""
    hooks = []
    for cons in group.consumers:
        cols = sorted(c for u in units for c in cons.units[u])
        dim = -1 if isinstance(cons.module, nn.Linear) else 1

        def mask(mod, args, cols=cols, dim=dim):
            x = args[0].clone()
            x.index_fill_(dim % x.dim(), torch.tensor(cols, dtype=torch.long, device=x.device), 0.0)
            return (x,) + tuple(args[1:])
        hooks.append(cons.module.register_forward_pre_hook(mask))
    try:
        with torch.no_grad():
            return flatten_outputs(model(*example_inputs))
    finally:
        for h in hooks:
            h.remove()


def diff_from_masked(got: list[torch.Tensor], want: list[torch.Tensor]) -> tuple[float, float] | None:
    """(max abs diff of a pruned copy's outputs from the masked dense outputs, 1 + the largest |want|: the scale
    a tolerance is relative to); None when the shapes differ (the removed units reach a model output)."""
    if [t.shape for t in got] != [t.shape for t in want]:
        return None
    return (max(float((a - b).abs().max()) for a, b in zip(got, want)),
            1.0 + max(float(b.abs().max()) for b in want))


def rewired_groups(model: nn.Module, example_inputs: tuple, groups: list, build: Callable[[nn.Module], list],
                   atol: float = 1e-4) -> dict[str, str]:
    """{group name: reason} of the groups (among those marked `reorders`) whose removal rewires channels.

    `build(model)` returns the groups of a model (bound to its modules). Per suspect group: one copy of the model,
    one dependency-graph build on it and two forwards; groups without a reordering op cost nothing.
    """
    bad = {}
    for g in groups:
        units = g.half_units() if g.reorders else []
        if not units:
            continue
        want = masked_outputs(model, example_inputs, g, units)
        trial = copy.deepcopy(model)
        tg = next(t for t in build(trial) if t.name == g.name)
        tg.remove(units)
        with torch.no_grad():
            got = flatten_outputs(trial(*example_inputs))
        compared = diff_from_masked(got, want)
        if compared is None:
            continue  # the group reaches a model output: no like-for-like comparison
        diff, scale = compared
        if diff > atol * scale:
            bad[g.name] = (f"its channels pass through a permutation (channel shuffle) that Torch-Pruning couples as "
                           f"the identity; removing them would rewire the model (max diff {diff:.2e} vs masking)")
    return bad
