"""recover_model(): recovery of an already pruned model against its dense original, scored on held-out data.

What `edgeprune prune --train` runs; `edgeprune.optimize` runs the same stages inside its search (optimizer/job.py).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from edgeprune.recover.blocks import find_blocks
from edgeprune.recover.config import RecoverConfig, RecoverReport
from edgeprune.recover.distill import DistillSetup
from edgeprune.recover.run import recover


def distill_kind(metric_name: str, dense_output: torch.Tensor) -> str:
    """The distillation loss that fits the metric: KL on class logits, per-token KL for LMs, pooled cosine +
    hidden-state MSE for embeddings, normalised MSE otherwise (e.g. segmentation maps, custom metrics)."""
    if metric_name == "perplexity":
        return "lm"
    if metric_name in ("neighbours", "cosine") and dense_output.dim() == 3:
        return "embedding"
    if dense_output.dim() == 2:
        return "logits"
    return "other"


def recover_model(pruned: nn.Module, dense: nn.Module, example_inputs: tuple, *, train: Any, eval_data: Any,
                  input_names: list[str], metric: str | None = None, config: RecoverConfig = RecoverConfig(),
                  max_drop: float = 1.0, say: Callable[[str], None] = lambda m: None) -> tuple[str, float, RecoverReport]:
    """Recover `pruned` in place on `train` (anything edgeprune.data.as_data takes), verified on `eval_data` with
    `metric` (default: by the model's head). Returns (metric name, dense score, report)."""
    from edgeprune.data import as_data, check_disjoint, trim_padding
    from edgeprune.metrics import default_metric_name, first_tensor, get_metric

    train_d = as_data(train, example_inputs, input_names=input_names)
    eval_d = as_data(eval_data, example_inputs, input_names=input_names)
    check_disjoint(eval_d, train=train_d)
    name = metric or default_metric_name(dense, example_inputs, input_names)
    mask = input_names.index("attention_mask") if "attention_mask" in input_names else None
    labels = torch.as_tensor(eval_d.labels) if eval_d.labels is not None else None
    batches = [trim_padding(b, mask) for b in eval_d.batches(max(1, min(32, len(eval_d))), drop_last=False)]
    bound = get_metric(name).bind(dense, batches, labels=labels, input_names=input_names)
    with torch.no_grad():
        kind = distill_kind(name, first_tensor(dense(*example_inputs)))
    train_batches = train_d.batches(min(16, len(train_d)))
    setup = DistillSetup(kind, mask, find_blocks(dense, pruned, train_batches[0]))
    report = recover(pruned, dense, train_batches, setup, config, verify=bound,
                     is_recovered=lambda s: bound.drop(s) <= max_drop, score=bound(pruned), say=say,
                     higher_is_better=bound.metric.higher_is_better)
    return name, bound.dense_score, report
