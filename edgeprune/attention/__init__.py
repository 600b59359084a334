"""Robust sparse attention (METHODS.md §7): block selection, dropped-block compensation, exportable compute.

    model = edgeprune.sparsify_attention(model, example_inputs, AttentionSparsityConfig(density=0.25), calib=...)
The kernel is plain torch (TopK + Gather + MatMul) so ONNX Runtime / OpenVINO run the sparse compute itself.
"""
from __future__ import annotations

from edgeprune.attention.apply import AttentionLayerResult, attention_layers, sparsify_attention
from edgeprune.attention.config import AttentionSparsityConfig, AttentionSparsityError
from edgeprune.attention.kernel import block_sparse_attention, dense_attention
from edgeprune.attention.module import SparseAttention

__all__ = ["sparsify_attention", "AttentionSparsityConfig", "AttentionSparsityError", "SparseAttention",
           "block_sparse_attention", "dense_attention", "attention_layers", "AttentionLayerResult"]
