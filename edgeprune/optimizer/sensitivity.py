"""How much the model's output moves when one group loses its least important units (NetAdapt/AMC-style
per-layer sensitivity), the common currency the planner trades against milliseconds.

Why not the importance scores alone: they are normalised per group (1.0 = all units), so 50% of a
16-channel residual stream and 50% of a 1280-channel head look equally cheap, and a CNN collapses.
Removal is simulated by zeroing the weights that read the units in every consumer (exactly what pruning
without compensation does to the output, up to the bias of a depthwise conv whose channel dies), on
one calibration batch, at a few widths per group.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Sequence

import numpy as np
import torch
from torch import nn

from edgeprune.optimizer.planner import GroupOption
from edgeprune.pruning import transposed


def _input_mask(module: nn.Module, cols: list[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight, bool mask of the entries that read input features `cols`), None for other layers."""
    w = getattr(module, "weight", None)
    if w is None:
        return None
    mask = torch.zeros_like(w, dtype=torch.bool)
    idx = torch.tensor(cols)
    if transposed.is_transposed(module):  # weight (in, out/groups, *k): input channel c is row c
        return w, transposed.input_mask(module, cols)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        # weight (out, in/groups, *k): input channel c feeds only the outputs of its conv group
        per_in, per_out = module.in_channels // module.groups, module.out_channels // module.groups
        for c in cols:
            g = c // per_in
            mask[g * per_out:(g + 1) * per_out, c % per_in] = True
    elif isinstance(module, nn.Linear):
        mask[:, idx] = True
    elif type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # HF GPT-2: weight (in, out)
        mask[idx, :] = True
    else:
        return None
    return w, mask


@contextlib.contextmanager
def zeroed_units(group, units: Sequence[int]):
    """Temporarily zero every consumer weight that reads `units` of `group`."""
    saved = []
    with torch.no_grad():
        for c in group.consumers:
            cols = sorted({i for u in units for i in c.units[u]})
            found = _input_mask(c.module, cols) if cols else None
            if found is None:
                continue
            w, mask = found
            saved.append((w, mask, w[mask].clone()))
            w[mask] = 0
    try:
        yield
    finally:
        with torch.no_grad():
            for w, mask, old in saved:
                w[mask] = old


def _nmse(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref||^2 / ||ref||^2: additive across small independent errors, unlike cosine."""
    ref = ref.double()
    return float(((out.double() - ref) ** 2).sum() / (ref ** 2).sum().clamp_min(1e-30))


def probe_widths(width: int, candidates: Sequence[int], points: int = 4) -> list[int]:
    """A few candidate widths spread over the range (the curve is interpolated between them)."""
    below = sorted((w for w in candidates if w < width), reverse=True)
    if not below:
        return []
    picks = {below[-1]}
    for frac in np.linspace(0.75, 0.25, points - 1):
        picks.add(min(below, key=lambda w: abs(w - frac * width)))
    return sorted(picks, reverse=True)


def group_errors(model: nn.Module, groups, scores: dict[str, Sequence[float]], candidates: dict[str, Sequence[int]],
                 batch: tuple, first_output) -> dict[str, tuple[tuple[int, float], ...]]:
    """{group: ((kept width, output NMSE), ...)} with (full width, 0.0) included."""
    with torch.no_grad():
        ref = first_output(model(*batch))
    from edgeprune.pruning.apply import choose_units

    curves = {}
    for g in groups:
        group_scores = torch.as_tensor(scores[g.name], dtype=torch.float64)
        points = [(g.n_units, 0.0)]
        for k in probe_widths(g.n_units, candidates[g.name]):
            # the units pruning would remove: least important first, same slots per conv group
            with zeroed_units(g, choose_units(group_scores, g.n_units - k, g.uniform)), torch.no_grad():
                points.append((k, _nmse(first_output(model(*batch)), ref)))
        curves[g.name] = tuple(points)
    return curves


@dataclasses.dataclass(frozen=True)
class SensitiveOption(GroupOption):
    """A GroupOption whose value is 1 - (output NMSE when pruned to k), linear between probed widths."""

    candidates: tuple[int, ...] = ()
    errors: tuple[tuple[int, float], ...] = ()

    def widths(self) -> list[int]:
        return [w for w in self.candidates if w >= self.min_keep] or [self.width]

    def value(self, k: int) -> float:
        if not self.errors:
            return super().value(k)
        ks, es = zip(*sorted(self.errors))
        if k <= ks[0]:  # below the narrowest probe: extrapolate its slope (never a gain)
            slope = (es[1] - es[0]) / (ks[1] - ks[0]) if len(ks) > 1 else 0.0
            return 1.0 - (es[0] + max(0.0, -slope) * (ks[0] - k))
        return 1.0 - float(np.interp(k, ks, es))
