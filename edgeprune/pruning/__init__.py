"""Structured pruning that returns a physically smaller model (no masks).

    pruned = edgeprune.prune(model, example_inputs, StructuredConfig(ratio=0.3), calib=batches)

Modules: config (StructuredConfig), graph (CNN dependency groups via Torch-Pruning), hf (attention
heads / FFN of Hugging Face blocks), stats (calibration Gram matrices), importance (scores),
compensate (least-squares refit), apply (the driver).
"""
from edgeprune.pruning.apply import prune
from edgeprune.pruning.config import StructuredConfig

__all__ = ["prune", "StructuredConfig"]
