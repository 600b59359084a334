"""Unit importance scores (larger = more important), METHODS §1.

numerical  ΔE_j = trace(W[:, S_j] · Hinv[S_j, S_j]⁻¹ · W[:, S_j]ᵀ) on every consumer layer, H = G + λI,
           λ = damp·mean(diag G): the least increase of the consumer's output error when unit j's
           input columns S_j are removed and the rest refitted (a |S_j|×|S_j| solve per unit:
           d_head×d_head for a head, kh·kw for a conv channel).
wanda      Σ_{c∈S_j} ‖W[:, c]‖₂ · ‖X_c‖₂ on the consumers (activation-aware magnitude).
magnitude  / l2 / l1: norm of the unit's producer rows and consumer columns (group norm, data-free).
taylor     |Σ W ⊙ ∂L/∂W| over the unit's producer rows and consumer columns (needs loss_fn).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.pruning import transposed
from edgeprune.pruning.compensate import ridge_cholesky
from edgeprune.pruning.group import Group
from edgeprune.weights import is_hf_conv1d
from edgeprune.pruning.stats import BlockStats, unit_columns, weight_matrix



def _damped_inverse(G: torch.Tensor, damp: float, where: str = "a layer") -> torch.Tensor:
    H = G.clone()
    diag = torch.diagonal(H)
    dead = diag <= 0
    diag[dead] = 1.0                       # inputs that are always zero: keep H positive definite
    diag += damp * diag.mean()
    L = ridge_cholesky(H, where)
    # H⁻¹ = L⁻ᵀ L⁻¹ via one triangular solve: torch.cholesky_inverse is ~30x slower on CPU (float64)
    Linv = torch.linalg.solve_triangular(L, torch.eye(L.shape[0], dtype=L.dtype), upper=False)
    return Linv.t() @ Linv


def numerical(group: Group, stats: dict[str, list[BlockStats]], damp: float) -> torch.Tensor:
    score = torch.zeros(group.n_units, dtype=torch.float64)
    for cons in group.consumers:
        for st in stats[cons.name]:
            cols = unit_columns(cons.units, st)
            if not cols:
                continue
            W = weight_matrix(cons.module, st)
            Hinv = _damped_inverse(st.G / max(st.n, 1), damp, f"importance of layer '{cons.name}'")
            by_size: dict[int, list[int]] = {}
            for j, c in cols.items():
                by_size.setdefault(len(c), []).append(j)
            for units in by_size.values():      # batch the solves of equally wide units
                idx = torch.stack([cols[j] for j in units])                 # (u, r)
                Hss = Hinv[idx.unsqueeze(-1), idx.unsqueeze(-2)]             # (u, r, r)
                Ws = W[:, idx].permute(1, 2, 0)                              # (u, r, out)
                if idx.shape[1] == 1:                                        # one column: ‖W[:, j]‖² / Hinv[j, j]
                    score[units] += Ws.pow(2).sum(dim=(1, 2)) / Hss[:, 0, 0]
                else:
                    score[units] += (Ws * torch.linalg.solve(Hss, Ws)).sum(dim=(1, 2))
    return score


def wanda(group: Group, stats: dict[str, list[BlockStats]]) -> torch.Tensor:
    score = torch.zeros(group.n_units, dtype=torch.float64)
    for cons in group.consumers:
        for st in stats[cons.name]:
            W = weight_matrix(cons.module, st)
            col_score = W.norm(dim=0) * torch.diagonal(st.G).clamp_min(0).sqrt() / max(st.n, 1) ** 0.5
            for j, c in unit_columns(cons.units, st).items():
                score[j] += col_score[c].sum()
    return score


def _rows_of(mod: nn.Module, t: torch.Tensor, idx: list[int], out_side: bool) -> torch.Tensor:
    """Slices of a weight-shaped tensor t belonging to features idx (output rows or input columns)."""
    if t.dim() == 1:  # a bias: indexed by output feature whatever the layer type
        return t[idx]
    if transposed.is_transposed(mod):  # weight (C_in, C_out/g, *k): inputs on dim 0, block-local outputs on dim 1
        if not out_side:
            return t[idx]
        per, rows = mod.out_channels // mod.groups, mod.in_channels // mod.groups
        return torch.cat([t[(i // per) * rows:(i // per + 1) * rows, i % per] for i in idx])
    if is_hf_conv1d(mod):  # HF GPT-2 Conv1D stores W as (in, out)
        return t[:, idx] if out_side else t[idx]
    if out_side:
        return t[idx]
    if isinstance(mod, nn.Conv2d) and mod.groups > 1:
        per = mod.in_channels // mod.groups
        return torch.cat([t[:, [i % per for i in idx]]])   # uniform slots: same local column in every block
    return t[:, idx]


def magnitude(group: Group, p: int = 2, taylor_of: dict | None = None) -> torch.Tensor:
    """Group norm of the unit's weights; with taylor_of (param -> accumulated W·grad), |Σ W·∂L/∂W| instead."""
    score = torch.zeros(group.n_units, dtype=torch.float64)
    parts = [(pr.module, pr.rows, True) for pr in group.producers] + [(c.module, c.units, False) for c in group.consumers]
    for mod, units, out_side in parts:
        for attr in ("weight", "bias") if out_side else ("weight",):
            t = getattr(mod, attr, None)
            if t is None:
                continue
            src = taylor_of.get(t) if taylor_of is not None else t.detach()
            if src is None:
                continue
            for j, feats in enumerate(units):
                part = _rows_of(mod, src, feats, out_side).double()
                if taylor_of is not None:
                    score[j] += part.sum().abs()
                elif p == 1:
                    score[j] += part.abs().sum()
                else:
                    score[j] += part.pow(2).sum()
    return score if (p == 1 or taylor_of is not None) else score.sqrt()


def taylor_products(model: nn.Module, batches, loss_fn) -> dict:
    """param -> Σ_batches W ⊙ ∂L/∂W on the dense model (first-order Taylor, Molchanov et al.)."""
    acc: dict = {}
    was = model.training
    model.eval()
    try:
        for args in batches:
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss = loss_fn(model(*args))
                loss.backward()
            for p in model.parameters():
                if p.grad is not None:
                    acc[p] = acc.get(p, 0) + (p.detach() * p.grad).double()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    return acc


@dataclasses.dataclass(frozen=True)
class ScoreInputs:
    """What an importance metric may read besides the group: calibration statistics, the ridge, Taylor sums, a seed."""

    stats: dict[str, list[BlockStats]] | None
    damp: float
    taylor_of: dict | None = None
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Importance:
    fn: Callable[[Group, ScoreInputs], torch.Tensor]
    needs_stats: bool = False  # reads the consumers' input Gram matrices (one calibration pass)


# name -> metric; StructuredConfig accepts exactly these names (a new metric is one register_importance call)
IMPORTANCE: dict[str, Importance] = {}


def register_importance(name: str, *, needs_stats: bool = False):
    def register(fn: Callable[[Group, ScoreInputs], torch.Tensor]):
        IMPORTANCE[name] = Importance(fn, needs_stats)
        return fn
    return register


register_importance("numerical", needs_stats=True)(lambda g, x: numerical(g, x.stats, x.damp))
register_importance("wanda", needs_stats=True)(lambda g, x: wanda(g, x.stats))
register_importance("magnitude")(lambda g, x: magnitude(g, 2))
register_importance("l2")(lambda g, x: magnitude(g, 2))
register_importance("l1")(lambda g, x: magnitude(g, 1))
register_importance("taylor")(lambda g, x: magnitude(g, taylor_of=x.taylor_of))
register_importance("random")(lambda g, x: torch.rand(g.n_units, generator=torch.Generator().manual_seed(x.seed),
                                                      dtype=torch.float64))


def importance_metric(name: str) -> Importance:
    """The registered metric, or a ConfigError listing the known names (never a fallback)."""
    if name not in IMPORTANCE:
        raise ConfigError(f"unknown importance '{name}'", hint=f"use one of {', '.join(IMPORTANCE)}")
    return IMPORTANCE[name]


def needs_stats(name: str) -> bool:
    return importance_metric(name).needs_stats


def score(group: Group, importance: str, stats, damp: float, taylor_of=None, seed: int = 0) -> torch.Tensor:
    return importance_metric(importance).fn(group, ScoreInputs(stats, damp, taylor_of, seed))
