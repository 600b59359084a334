"""BatchNorm re-estimation (adaptive BN, Li et al. 2020 "EagleEye"; docs/METHODS.md §9.1).

Pruning a conv's inputs changes the distribution its BatchNorm normalises, but the running mean/var still
describe the dense model. Reset them, average them cumulatively (momentum=None) over training batches in train
mode without gradients, then return to eval. No weight changes; seconds of work.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, BN_TYPES) and m.track_running_stats for m in model.modules())


def reestimate_bn(model: nn.Module, batches: Sequence[tuple], max_samples: int = 512) -> dict[str, float]:
    """Re-estimate every BatchNorm's running statistics on `batches` (tuples of model inputs, batch dim first).

    Returns {"layers": n, "samples": n, "mean_shift": mean |new - old running mean| over all channels}.
    Only BN layers change mode: dropout and the rest stay in eval (their randomness would bias the averages).
    """
    bns = [m for m in model.modules() if isinstance(m, BN_TYPES) and m.track_running_stats]
    if not bns:
        return {"layers": 0, "samples": 0, "mean_shift": 0.0}
    old = [m.running_mean.clone() for m in bns]
    saved = [(m.momentum, m.training) for m in bns]
    was_training = model.training
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs by its count
        m.train()
    seen = 0
    with torch.no_grad():
        for batch in batches:
            if seen >= max_samples:
                break
            model(*batch)
            seen += int(batch[0].shape[0])
    for m, (momentum, training) in zip(bns, saved):
        m.momentum = momentum
        m.train(training and was_training)
    model.train(was_training)
    shift = torch.cat([(m.running_mean - o).abs() for m, o in zip(bns, old)]).mean()
    return {"layers": len(bns), "samples": seen, "mean_shift": float(shift)}
