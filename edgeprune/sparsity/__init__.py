"""N:M, block and unstructured sparsity: patterns, Wanda / SparseGPT, learned allocation, export checks.

    model = edgeprune.sparsify(model, example_inputs, SparsityConfig(pattern="2:4", method="sparsegpt"), calib=...)
Heavy pieces (ONNX checks, CUDA swap, allocation) are imported on use.
"""
from __future__ import annotations

from edgeprune.sparsity.apply import SparsityConfig, sparsify
from edgeprune.sparsity.patterns import NM, Block, PatternCheck, SparsityPattern, Unstructured, parse_pattern
from edgeprune.sparsity.result import LayerResult, SparsityReport

__all__ = ["sparsify", "SparsityConfig", "SparsityPattern", "Unstructured", "NM", "Block", "PatternCheck", "parse_pattern",
           "SparsityReport", "LayerResult"]
