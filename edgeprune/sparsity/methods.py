"""Sparsity methods as a registry: name -> how a layer's (out, K) weight becomes its sparse version.

Each method takes the float weight matrix, the layer's calibration moments (None when data-free), the pattern
and the layer's target sparsity, and returns (new weight, keep mask). A method that needs data says so, and
`needs_hessian` asks the calibration pass for the full input Gram matrix (SparseGPT) instead of column norms.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from edgeprune.errors import ConfigError
from edgeprune.sparsity.sparsegpt import sparsegpt_prune
from edgeprune.sparsity.wanda import magnitude_mask, wanda_mask

Prune = Callable[[torch.Tensor, Any, Any, "float | None", Any], "tuple[torch.Tensor, torch.Tensor]"]


@dataclasses.dataclass(frozen=True)
class Method:
    prune: Prune  # (w, moments, pattern, sparsity, cfg) -> (new w, keep mask)
    needs_data: bool
    needs_hessian: bool = False


def _masked(w: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.where(keep, w, torch.zeros_like(w)), keep


SPARSITY_METHODS: dict[str, Method] = {
    "magnitude": Method(lambda w, m, pat, s, cfg: _masked(w, magnitude_mask(w, pat, s)), needs_data=False),
    "wanda": Method(lambda w, m, pat, s, cfg: _masked(w, wanda_mask(w, m.col_norms, pat, s)), needs_data=True),
    "sparsegpt": Method(lambda w, m, pat, s, cfg: sparsegpt_prune(w, m.hessian, pat, s, cfg.blocksize, cfg.damp),
                        needs_data=True, needs_hessian=True),
}
DATA_FREE = "magnitude"  # what a layer the calibration pass never reached is pruned with (said in the report)


def sparsity_method(name: str) -> Method:
    """The registered method, or a ConfigError listing the known names (never a fallback)."""
    if name not in SPARSITY_METHODS:
        raise ConfigError(f"unknown sparsity method '{name}'", hint=f"use one of {', '.join(SPARSITY_METHODS)}")
    return SPARSITY_METHODS[name]
