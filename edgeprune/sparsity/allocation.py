"""Learned per-layer sparsity allocation with KDE-smoothed thresholds (seed 001, METHODS.md §5).

Layer l keeps weight i when its (per-layer normalised) importance a_i >= τ_l. The layer's sparsity
s_l(τ) = mean(a < τ) is a step function; a Gaussian kernel density estimate of the a_i makes it smooth:
s_l(τ) ≈ mean Φ((τ − a_i) / h_l), h_l = 1.06 σ N^(−1/5) (Silverman) on a ≤10k subsample. The forward
pass uses the hard mask with a straight-through gradient from the same kernel, so τ (log-parametrised,
one scalar per layer) learns from model-output reconstruction on calibration data, plus the
"controllable" term γ (Σ N_l s_l / Σ N_l − s*)². Weights never change here. At the end a shared
log-offset is bisected so the hard global sparsity equals s*; the per-layer s_l then drive the
pruning method (magnitude / Wanda / SparseGPT).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call

from edgeprune.sparsity.calib import Moments, input_matrix
from edgeprune.weights import is_hf_conv1d, linear_weight

_SUBSAMPLE = 10_000


@dataclasses.dataclass
class AllocationResult:
    sparsities: dict[str, float]  # per layer, from the hard thresholds after the final bisection
    target: float
    achieved: float  # element-weighted global sparsity of those thresholds
    steps: int
    seconds: float
    loss_start: float  # reconstruction loss at uniform allocation (step 0)
    loss_end: float  # at the last step (soft constraint)
    history: list[tuple[int, float, float]]  # (step, reconstruction loss, soft global sparsity) every 25 steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next(t for t in out if isinstance(t, torch.Tensor))
    if hasattr(out, "to_tuple"):
        return _first_tensor(out.to_tuple())
    raise TypeError(f"no tensor in {type(out).__name__}")


def _matrix_to_param(mod: nn.Module, mat: torch.Tensor) -> torch.Tensor:
    from edgeprune.sparsity.patterns import from_matrix

    w = from_matrix(mat, tuple(linear_weight(mod).shape))  # the (out, in, *k) view, then the module's layout
    return w.t() if is_hf_conv1d(mod) else w


def learn_allocation(model: nn.Module, layers: dict[str, nn.Module], batch, cfg, weight_fn: Callable) -> AllocationResult:
    """Per-layer sparsities for `layers` meeting cfg.target_sparsity globally (see module docstring)."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    target, s_max = cfg.target_sparsity, cfg.max_layer_sparsity
    args, kwargs = batch  # the caller's first cfg.allocation_samples samples
    wanda = cfg.method != "magnitude"

    targets, moments = _dense_pass(model, layers, args, kwargs, wanda)
    names = list(layers)
    weights, imps, subs, bandwidths, counts = _importances(layers, moments, weight_fn, wanda)
    total = float(sum(counts.values()))
    sorted_sub = {n: torch.sort(subs[n]).values for n in names}
    lo = {n: math.log(float(sorted_sub[n][0]) + 1e-12) for n in names}
    hi = {n: math.log(float(sorted_sub[n][min(len(sorted_sub[n]) - 1, int(s_max * len(sorted_sub[n])))]) + 1e-12) for n in names}
    theta = nn.Parameter(torch.tensor([math.log(float(torch.quantile(subs[n], target)) + 1e-12) for n in names]))
    opt = torch.optim.Adam([theta], lr=cfg.allocation_lr)
    normal = torch.distributions.Normal(0.0, 1.0)
    history, loss_start, recon_val = [], None, float("nan")

    for step in range(cfg.allocation_steps):
        tau = theta.exp()
        params, soft_global = {}, 0.0
        for j, name in enumerate(names):
            a, h = imps[name], bandwidths[name]
            keep_soft = normal.cdf((a - tau[j]) / h)
            keep = (a >= tau[j]).float() + keep_soft - keep_soft.detach()  # hard forward, KDE gradient
            params[f"{name}.weight"] = _matrix_to_param(layers[name], weights[name] * keep)
            s_l = normal.cdf((tau[j] - subs[name]) / h).mean()  # KDE estimate of the layer's sparsity
            soft_global = soft_global + s_l * (counts[name] / total)
        got = {0: _first_tensor(functional_call(model, params, args, kwargs, strict=False))}
        recon = sum(((got[i] - targets[i]) ** 2).sum() / (targets[i] ** 2).sum().clamp_min(1e-12) for i in targets) / len(targets)
        loss = recon + cfg.allocation_gamma * (soft_global - target) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # clip s_l to [0, s_max] through the threshold range
            for j, n in enumerate(names):
                theta[j].clamp_(lo[n], hi[n])
        recon_val = float(recon.detach())
        loss_start = recon_val if loss_start is None else loss_start
        if step % 25 == 0 or step == cfg.allocation_steps - 1:
            history.append((step, recon_val, float(soft_global.detach())))

    sparsities, achieved = _exact_global(names, imps, counts, theta.detach(), target, s_max)
    return AllocationResult(sparsities, target, achieved, cfg.allocation_steps, time.perf_counter() - t0,
                            float(loss_start), recon_val, history)


def _dense_pass(model: nn.Module, layers: dict[str, nn.Module], args, kwargs, wanda: bool):
    """The model output (the reconstruction target) and, for Wanda-style importance, per-layer input moments.

    Why the final output and not the mean over blocks: an early block's error is counted again in every later
    block's output while the last block's counts once, so a block-averaged loss prunes the last block hardest and
    hurts the output most (measured on the tiny GPT-2 at 70% magnitude: perplexity 507.0 block-averaged vs 480.4
    output-reconstructed, uniform 479.7)."""
    outputs: dict[int, torch.Tensor] = {}
    moments: dict[str, Moments] = {}
    hooks = [model.register_forward_hook(lambda m, a, o: outputs.__setitem__(0, _first_tensor(o)))]
    if wanda:
        def pre(name):
            def hook(mod, a):
                x = input_matrix(nn.Linear(1, 1) if is_hf_conv1d(mod) else mod, a[0])
                moments.setdefault(name, Moments(x.shape[1], need_hessian=False)).add(x)
            return hook
        hooks += [m.register_forward_pre_hook(pre(n)) for n, m in layers.items()]
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return {i: o.detach() for i, o in outputs.items()}, moments


def _importances(layers: dict[str, nn.Module], moments: dict, weight_fn: Callable, wanda: bool):
    """Per layer: weight matrix, importance (|w|, times input norms for Wanda) normalised to mean 1 so thresholds
    compare across layers and start near 1, a subsample of it, its KDE bandwidth (Silverman), and its size."""
    weights, imps, subs, bandwidths, counts = {}, {}, {}, {}, {}
    for name, layer in layers.items():
        w = weight_fn(layer).float()
        a = w.abs() * (moments[name].col_norms.float().reshape(1, -1) if wanda and name in moments else 1.0)
        a = a / a.mean().clamp_min(1e-12)
        flat = a.reshape(-1)
        sub = flat[torch.randperm(flat.numel())[:_SUBSAMPLE]] if flat.numel() > _SUBSAMPLE else flat
        weights[name], imps[name], subs[name], counts[name] = w, a, sub, flat.numel()
        bandwidths[name] = max(1.06 * float(sub.std()) * sub.numel() ** -0.2, 1e-6)
    return weights, imps, subs, bandwidths, counts


def _exact_global(names, imps, counts, theta, target, s_max) -> tuple[dict[str, float], float]:
    """Bisect a shared log-offset δ so Σ_l count(a_l < τ_l e^δ) (each capped at s_max) = s* Σ N_l."""
    sorted_a = {n: torch.sort(imps[n].reshape(-1)).values for n in names}
    total = sum(counts.values())

    def zeros(delta: float) -> dict[str, int]:
        out = {}
        for j, n in enumerate(names):
            tau = math.exp(float(theta[j]) + delta)
            k = int(torch.searchsorted(sorted_a[n], torch.tensor(tau, dtype=sorted_a[n].dtype)))
            out[n] = min(k, int(s_max * counts[n]))
        return out

    lo, hi = -20.0, 20.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if sum(zeros(mid).values()) < target * total:
            lo = mid
        else:
            hi = mid
    z = zeros(hi)
    return {n: z[n] / counts[n] for n in names}, sum(z.values()) / total


__all__ = ["AllocationResult", "learn_allocation"]
