"""Calibration plumbing: which layers to sparsify and a layer's input matrix (the data itself: edgeprune.data).

A layer's calibration input X is returned as rows = samples (tokens or conv output positions),
columns in the layer's matrix-view order (see patterns.to_matrix): for Conv that is the unfolded
(im2col) input reordered to (kernel position, C_in).
"""
from __future__ import annotations

import fnmatch
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from edgeprune.errors import ConfigError

LAYER_TYPES = {"linear": nn.Linear, "conv": nn.Conv2d}


def target_layers(model: nn.Module, ignore: Sequence[str] = (), types: Sequence[str] = ("linear", "conv")) -> dict[str, nn.Module]:
    """name -> module for every Linear / Conv2d not matched by an `ignore` glob (fnmatch on the module name)."""
    classes = tuple(LAYER_TYPES[t] for t in types)
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, classes) and not any(fnmatch.fnmatchcase(name, pat) for pat in ignore):
            out[name] = mod
    return out


def unsupported_reason(mod: nn.Module) -> str | None:
    """Why a layer cannot take a calibrated pattern, or None."""
    if isinstance(mod, nn.Conv2d):
        if mod.groups != 1:
            return f"grouped conv (groups={mod.groups}): no N:M / block kernel reads grouped weights"
        if mod.padding_mode != "zeros":
            return f"conv padding_mode={mod.padding_mode} is not supported by the input capture"
    return None


def input_matrix(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Layer input -> X of shape (samples, K) in matrix-view column order."""
    x = x.detach().float()
    if isinstance(mod, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(mod, nn.Conv2d):
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if isinstance(mod.padding, str):
            raise ConfigError(f"conv with padding='{mod.padding}' is not supported by calibration", hint="ignore this layer")
        cols = F.unfold(x, mod.kernel_size, dilation=mod.dilation, padding=mod.padding, stride=mod.stride)
        n, _, positions = cols.shape
        cin, kk = x.shape[1], mod.kernel_size[0] * mod.kernel_size[1]
        # unfold orders features (C_in, kh*kw); the matrix view wants (kh*kw, C_in)
        cols = cols.reshape(n, cin, kk, positions).permute(0, 3, 2, 1)
        return cols.reshape(n * positions, kk * cin)
    raise ConfigError(f"no calibration capture for {type(mod).__name__}")


class Moments:
    """Running statistics of a layer input: H = 2/n Σ x xᵀ (float64) and the per-column L2 norms."""

    def __init__(self, k: int, need_hessian: bool):
        self.n = 0
        self.sq = torch.zeros(k, dtype=torch.float64)
        self.h = torch.zeros(k, k, dtype=torch.float64) if need_hessian else None

    def add(self, x: torch.Tensor) -> None:
        x = x.float()  # float32 GEMM (fast), accumulated in float64 across chunks
        self.n += x.shape[0]
        self.sq += (x * x).sum(dim=0).double()
        if self.h is not None:
            self.h += (x.T @ x).double()

    @property
    def col_norms(self) -> torch.Tensor:
        return self.sq.sqrt()

    @property
    def hessian(self) -> torch.Tensor:
        return self.h * (2.0 / max(1, self.n))


__all__ = ["target_layers", "unsupported_reason", "input_matrix", "Moments"]
