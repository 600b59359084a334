"""SparseGPT for one layer (METHODS.md §3): mask selection and OBS error propagation.

Shapes: W is the matrix view (out, K); H = 2 X Xᵀ / n is (K, K) with X the layer's calibration
inputs in the same column order as W. Works in float64: K <= a few thousand on CPU is seconds.
The mask for a window of columns (m for N:M, a block-column strip for Block, 128 for
unstructured) is chosen from the *already updated* weights by w² / d², d = diag of the upper
Cholesky factor of H⁻¹; masked entries become exact zeros and are never touched again.
"""
from __future__ import annotations

import math

import torch

from edgeprune.errors import SparsityError
from edgeprune.sparsity.patterns import SparsityPattern


def hessian_inverse_factor(h: torch.Tensor, w: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor U of (H + λI)⁻¹ (so H⁻¹ = Uᵀ U), dead inputs handled; returns (U, W)."""
    h = h.double().clone()
    w = w.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0  # an input that is always zero: its weights cannot matter, zero them
    w[:, dead] = 0.0
    lam = damp * torch.mean(torch.diag(h))
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    for attempt in range(6):  # raise damping until the factorisation succeeds
        l_factor, info = torch.linalg.cholesky_ex(h + lam * (10**attempt) * eye)
        if int(info) == 0:
            break
    else:
        raise SparsityError("SparseGPT: the Hessian stays singular after damping", hint="use more calibration samples or method='wanda'")
    h_inv = torch.cholesky_inverse(l_factor)
    u, info = torch.linalg.cholesky_ex(h_inv, upper=True)
    if int(info):
        raise SparsityError("SparseGPT: H⁻¹ is not positive definite", hint="raise damp or use more calibration samples")
    return u, w


def sparsegpt_prune(w: torch.Tensor, h: torch.Tensor, pattern: SparsityPattern, sparsity: float | None,
                    blocksize: int = 128, damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (pruned W as float32, keep-mask); W and H as in the module docstring."""
    rows, cols = w.shape
    if h.shape != (cols, cols):
        raise SparsityError(f"SparseGPT: Hessian {tuple(h.shape)} does not match weight {tuple(w.shape)}")
    s = pattern.target(sparsity)
    u, w = hessian_inverse_factor(h, w, damp)
    win = pattern.window(cols)
    blocksize = win * max(1, math.ceil(blocksize / win))  # a mask window never straddles a column block
    keep = torch.ones(rows, cols, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            if i % win == 0:  # choose the mask for the next window from the current (updated) weights
                j = min(i + win, i2 - i1)
                d = torch.diag(u1)[i:j]
                scores = (w1[:, i:j] ** 2) / (d.reshape(1, -1) ** 2)
                keep[:, i1 + i:i1 + j] = pattern.mask(scores, s, per_row=False)
            col = w1[:, i]
            q = torch.where(keep[:, i1 + i], col, torch.zeros_like(col))
            e = (col - q) / u1[i, i]
            w1[:, i:] -= e.unsqueeze(1) @ u1[i, i:].unsqueeze(0)
            w1[:, i] = q  # exact zeros, not "almost" zeros from the update above
            err1[:, i] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]  # lazy batch update of the later columns
    w = torch.where(keep, w, torch.zeros_like(w))
    return w.float(), keep


def reconstruction_error(w: torch.Tensor, w_new: torch.Tensor, h: torch.Tensor) -> float:
    """Relative output error ||W X - Ŵ X||² / ||W X||² computed from H ∝ X Xᵀ."""
    w, w_new, h = w.double(), w_new.double(), h.double()
    delta = w - w_new
    num = torch.sum((delta @ h) * delta)
    den = torch.sum((w @ h) * w)
    return float(num / den) if den > 0 else 0.0


__all__ = ["sparsegpt_prune", "reconstruction_error", "hessian_inverse_factor"]
