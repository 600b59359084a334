"""Recovery after pruning: BatchNorm re-estimation, block-local reconstruction and distillation from the dense model.

What lives here: `RecoverConfig` (frozen), `recover()` (the staged loop: BN -> verify -> block-local
reconstruction -> end-to-end distillation -> verify, stopping as soon as the metric is back), and its stages
as separate modules; `recover_model()` for an already pruned model. It may import torch, `edgeprune.errors`,
`edgeprune._io`, `edgeprune.data` and `edgeprune.metrics`; never the optimizer, the CLI or a runtime backend. The method, with its sources, is docs/METHODS.md §9.
"""
from edgeprune.recover.bn import reestimate_bn
from edgeprune.recover.config import RecoverConfig, RecoverReport, StageResult
from edgeprune.recover.distill import distill
from edgeprune.recover.run import recover
from edgeprune.recover.api import recover_model

__all__ = ["RecoverConfig", "RecoverReport", "StageResult", "recover", "recover_model", "reestimate_bn", "distill"]
