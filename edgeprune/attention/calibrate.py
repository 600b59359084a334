"""Per-layer density under a global target (METHODS.md §7 step 5, the §6 greedy by Δerror / Δdensity).

1. capture q, k, v and the key padding of every attention layer on calibration data (one forward pass),
2. error_l(d) = ||sparse_d(q, k, v) - dense(q, k, v)|| / ||dense|| for every density d of the grid (1.0 -> 0),
   with compensate="auto" the lower of the errors with and without compensation, and which one it was,
3. start every layer at the lowest density; repeatedly move the layer whose next grid step removes the most
   error per unit of density, while the mean density stays within the target.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from edgeprune.attention.kernel import dense_attention
from edgeprune.attention.module import SparseAttention


@dataclasses.dataclass
class LayerCalibration:
    name: str
    errors: dict[float, float]  # density -> relative output error on the calibration data
    density: float = 1.0
    compensate: dict[float, bool] = dataclasses.field(default_factory=dict)  # density -> the better choice


def run_batches(model: nn.Module, batches) -> None:
    with torch.inference_mode():
        for args, kwargs in batches:
            model(*args, **kwargs)


def capture(model: nn.Module, modules: dict[str, nn.Module], batches) -> dict[str, list]:
    """{layer name: [(q, k, v, key_valid, scale), ...]} recorded by the registered attention function."""
    for m in modules.values():
        m._edgeprune_record = []
    try:
        run_batches(model, batches)
        return {name: m._edgeprune_record for name, m in modules.items()}
    finally:
        for m in modules.values():
            del m._edgeprune_record


def relative_error(layer: SparseAttention, records) -> float:
    num = den = 0.0
    with torch.inference_mode():
        for q, k, v, kv, scale in records:
            ref = dense_attention(q, k, v, kv, causal=layer.causal, scale=scale)
            out = layer(q, k, v, kv, scale=scale)
            if kv is not None:  # padded queries do not count
                ref, out = ref * kv[:, None, :, None], out * kv[:, None, :, None]
            num += float((out - ref).double().pow(2).sum())
            den += float(ref.double().pow(2).sum())
    return (num / max(den, 1e-30)) ** 0.5


def layer_errors(layers: dict[str, SparseAttention], records: dict[str, list], grid,
                 choose_compensation: bool = False) -> dict[str, LayerCalibration]:
    out = {}
    for name, layer in layers.items():
        errs, comp = {}, {}
        for d in grid:
            if d >= 1.0:
                errs[d], comp[d] = 0.0, layer.compensate
                continue
            tried = {}
            for c in ((True, False) if choose_compensation else (layer.compensate,)):
                probe = SparseAttention(density=d, block_size=layer.block_size, window=layer.window,
                                        global_blocks=layer.global_blocks, compensate=c,
                                        causal=layer.causal, per_head=layer.per_head)
                tried[c] = relative_error(probe, records[name])
            comp[d] = min(tried, key=tried.get)
            errs[d] = tried[comp[d]]
        out[name] = LayerCalibration(name, errs, compensate=comp)
    return out


def allocate(calib: dict[str, LayerCalibration], target: float, grid) -> dict[str, float]:
    """Greedy under mean density <= target (the lowest grid density is the floor even above the target)."""
    grid = sorted(grid)
    step = {n: 0 for n in calib}
    budget = target * len(calib)
    used = grid[0] * len(calib)
    while True:
        best, best_gain = None, 0.0
        for n, c in calib.items():
            i = step[n]
            for j in range(i + 1, len(grid)):  # any later grid point: skips steps that buy no error (same K)
                if used + grid[j] - grid[i] > budget + 1e-9:
                    break
                gain = (c.errors[grid[i]] - c.errors[grid[j]]) / (grid[j] - grid[i])
                if best is None or gain > best_gain:
                    best, best_gain = (n, j), gain
        if best is None:
            break
        n, j = best
        used += grid[j] - grid[step[n]]
        step[n] = j
    for n, c in calib.items():
        c.density = grid[step[n]]
    return {n: grid[step[n]] for n in calib}
