"""SparseAttention: one layer's sparse-attention settings as an nn.Module (no parameters)."""
from __future__ import annotations

import torch
from torch import nn

from edgeprune.attention.kernel import block_sparse_attention, dense_attention


class SparseAttention(nn.Module):
    """q, k, v [b, h, L, d], key_valid [b, L] bool or None -> [b, h, L, d].

    density >= 1 (and no top_k) runs exact dense attention; otherwise the block-sparse kernel. Attached to a Hugging
    Face attention module as `.sparse_attention`; usable on its own (the attention-layer benchmark exports it)."""

    def __init__(self, *, density: float | None = 0.25, top_k: int | None = None, block_size: int = 64, window: int = 1,
                 global_blocks: int = 1, compensate: bool = True, causal: bool = False, per_head: bool = True,
                 scale: float | None = None):
        super().__init__()
        self.density, self.top_k, self.block_size = density, top_k, block_size
        self.window, self.global_blocks, self.compensate = window, global_blocks, compensate
        self.causal, self.per_head, self.scale = causal, per_head, scale

    @property
    def dense(self) -> bool:
        return self.top_k is None and (self.density is None or self.density >= 1.0)

    @classmethod
    def from_config(cls, cfg, *, density: float | None = None, causal: bool = False, scale: float | None = None):
        return cls(density=cfg.density if density is None else density, top_k=cfg.top_k, block_size=cfg.block_size,
                   window=cfg.window, global_blocks=cfg.global_blocks, compensate=cfg.compensate is not False, causal=causal,
                   per_head=cfg.per_head, scale=scale)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor | None = None,
                scale: float | None = None) -> torch.Tensor:
        scale = self.scale if scale is None else scale
        if self.dense:
            return dense_attention(q, k, v, key_valid, causal=self.causal, scale=scale)
        return block_sparse_attention(q, k, v, key_valid, block=self.block_size, window=self.window,
                                      global_blocks=self.global_blocks, density=self.density, top_k=self.top_k,
                                      causal=self.causal, compensate=self.compensate, scale=scale,
                                      per_head=self.per_head)

    def extra_repr(self) -> str:
        what = "dense" if self.dense else (f"top_k={self.top_k}" if self.top_k is not None else f"density={self.density:.3g}")
        return (f"{what}, block={self.block_size}, window={self.window}, global_blocks={self.global_blocks}, "
                f"compensate={self.compensate}, causal={self.causal}")
