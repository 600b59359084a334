"""`edgeprune.optimize(model, example_inputs, config, calib=, train=, eval_data=, evaluate=) -> OptimizeResult`.

The data path: calib feeds compensation, sensitivity and attention calibration; train (default: calib) feeds
recovery; eval_data is held out and scores every attempt with the metric. Eval data that shares a file or a sample
with calib or train is refused. Without eval_data (and without `evaluate`) a quarter of calib is held out and
neither calibration nor recovery sees it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.optimizer.config import DEFAULT_MAX_DROP, OptimizeConfig
from edgeprune.optimizer.core import OptimizeResult
from edgeprune.optimizer.job import Job, resume_keep
from edgeprune.recover.api import distill_kind

HOLD_OUT = 0.25  # of calib, when no eval data is given
RECOVER_BATCH = 16


def _split_off_eval(calib, say):
    """(calib, eval) when the user gave no eval data: the last quarter of calib (at least 8 samples) is held out."""
    n = len(calib)
    if n < 16:
        raise ConfigError(f"{n} calibration samples cannot be split into calibration and held-out evaluation data",
                          hint="give eval data (--eval-data) or at least 16 calibration samples")
    k = max(8, int(n * HOLD_OUT))
    say(f"no eval data given: holding out {k} of {n} calibration samples for scoring")
    return calib[: n - k], calib[n - k:]


def resolve_data(calib: Any, train: Any, eval_data: Any, example_inputs: tuple, names: list[str], config: OptimizeConfig,
                 need_eval: bool, say) -> tuple:
    """(calib, train, eval) as CalibrationData, disjoint where eval is concerned (eval may be None: custom evaluate)."""
    from edgeprune.data import as_data, check_disjoint

    calib_d = as_data(calib, example_inputs, input_names=names)
    train_d = as_data(train, example_inputs, input_names=names) if train is not None else None
    eval_d = as_data(eval_data, example_inputs, input_names=names) if eval_data is not None else None
    if eval_d is None and need_eval:
        calib_d, eval_d = _split_off_eval(calib_d, say)
        if train_d is None:
            train_d = calib_d
    train_d = train_d if train_d is not None else calib_d
    if eval_d is not None:
        check_disjoint(eval_d, calib=calib_d, train=train_d)
    return calib_d.take(config.calib_samples, config.seed), train_d, eval_d


def _scorer(model: nn.Module, example_inputs: tuple, names: list[str], eval_d, config: OptimizeConfig,
            evaluate: Callable[[nn.Module], float] | None):
    """(metric name, score fn, drop fn, dense score) for the user's metric on the held-out data, or their function."""
    if evaluate is not None:
        dense = float(evaluate(model))
        return "custom", evaluate, (lambda s: dense - s), dense
    from edgeprune.metrics import default_metric_name, get_metric

    name = config.metric or default_metric_name(model, example_inputs, names)
    labels = torch.as_tensor(eval_d.labels) if getattr(eval_d, "labels", None) is not None else None
    from edgeprune.data import trim_padding

    batch = max(1, min(32, len(eval_d)))
    mask = names.index("attention_mask") if "attention_mask" in names else None
    batches = [trim_padding(b, mask) for b in eval_d.batches(batch, drop_last=False)]  # exact; far less work on text
    bound = get_metric(name).bind(model, batches, labels=labels, input_names=names)
    return name, bound, bound.drop, bound.dense_score


def _summary(calib_d, train_d, eval_d) -> dict[str, Any]:
    def one(d):
        return None if d is None else {"source": d.source, "samples": len(d)}

    return {"calib": one(calib_d), "train": one(train_d), "eval": one(eval_d)}


def optimize(model: nn.Module, example_inputs: Any, config: OptimizeConfig | None = None, *, calib: Any = None,
             train: Any = None, eval_data: Any = None, evaluate: Callable[[nn.Module], float] | None = None,
             input_names: list[str] | None = None, model_name: str = "model", progress: Callable[[str], None] | None = None,
             workdir: Any = None) -> OptimizeResult:
    """Prune `model` for config's target until it meets the latency budget, recovering accuracy with the dense model
    as teacher, scored on held-out data; back off only when the drop still exceeds config.max_drop.

    calib/train/eval_data: anything edgeprune.data.as_data takes (CalibrationData, a path, tensors, a list of input
    tuples, a DataLoader). evaluate(model) -> points (higher is better) replaces the metric."""
    from edgeprune.optimizer.run import search

    config = config or OptimizeConfig()
    say = progress or (lambda msg: None)
    example_inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    names = list(input_names or [f"input_{i}" for i in range(len(example_inputs))])
    model = model.eval()
    calib_d, train_d, eval_d = resolve_data(calib, train, eval_data, example_inputs, names, config, evaluate is None, say)
    metric, score, drop, score_dense = _scorer(model, example_inputs, names, eval_d, config, evaluate)
    with torch.no_grad():
        from edgeprune.metrics import first_tensor

        kind = distill_kind(metric, first_tensor(model(*example_inputs)))
    rc = config.recover
    job = Job(calib_d, calib_d.batches(min(32, len(calib_d))), train_d.batches(min(RECOVER_BATCH, len(train_d))), names, model_name,
              metric, score, drop, score_dense, model, kind, rc,
              DEFAULT_MAX_DROP[metric] if config.max_drop is None else config.max_drop, _summary(calib_d, train_d, eval_d), say,
              workdir, resume_keep(rc.checkpoint_dir) if rc.resume else None)
    if rc.resume and job.resume_keep is None:
        raise ConfigError(f"nothing to resume in {rc.checkpoint_dir}", hint="run without --resume")
    return search(model, example_inputs, config, job)


__all__ = ["optimize", "OptimizeConfig", "OptimizeResult", "resolve_data"]
