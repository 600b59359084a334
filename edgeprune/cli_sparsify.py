"""`edgeprune sparsify` (N:M, block, unstructured sparsity) CLI commands."""
from __future__ import annotations

COMMANDS: list = []
