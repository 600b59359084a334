"""Magnitude and Wanda masks for one layer (METHODS.md §1).

Wanda scores S_ij = |W_ij| * ||X_j||_2 with ||X_j|| the L2 norm of input feature j over all
calibration tokens; compared within each output row (unstructured) or within each N:M group / block.
Shapes: W is the matrix view (out, K); col_norms is (K,).
"""
from __future__ import annotations

import torch

from edgeprune.sparsity.patterns import SparsityPattern, Unstructured


def magnitude_mask(w: torch.Tensor, pattern: SparsityPattern, sparsity: float | None) -> torch.Tensor:
    """Keep-mask from |W|; unstructured magnitude compares across the whole layer."""
    return pattern.mask(w.abs().float(), sparsity, per_row=False)


def wanda_scores(w: torch.Tensor, col_norms: torch.Tensor) -> torch.Tensor:
    return w.abs().float() * col_norms.float().reshape(1, -1)


def wanda_mask(w: torch.Tensor, col_norms: torch.Tensor, pattern: SparsityPattern, sparsity: float | None) -> torch.Tensor:
    """Keep-mask from Wanda scores; unstructured is per output row, as in the paper."""
    return pattern.mask(wanda_scores(w, col_norms), sparsity, per_row=isinstance(pattern, Unstructured))


__all__ = ["magnitude_mask", "wanda_scores", "wanda_mask"]
