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


def _with_labels(obj: Any, n_inputs: int) -> tuple[Any, bool]:
    """(obj, labelled): an iterable of (inputs..., labels) items, such as a (x, y) DataLoader, has one element more
    per item than the model has inputs; its last element is then the label, not an input. A one-shot iterator is
    peeked at and handed back whole."""
    import itertools
    import os

    from edgeprune.data import CalibrationData

    if obj is None or isinstance(obj, (str, os.PathLike, CalibrationData, tuple, dict)) or hasattr(obj, "shape") \
            or not hasattr(obj, "__iter__"):
        return obj, False
    it = iter(obj)
    first = next(it, None)
    if it is obj:  # a generator: what was read must be put back
        obj = itertools.chain([] if first is None else [first], it)
    return obj, isinstance(first, (tuple, list)) and len(first) == n_inputs + 1


def _read_path(path: Any, example_inputs: tuple, names: list[str], tokenizer: Any, preprocess: Any):
    """Every sample of a data file or folder (the caller samples), shaped like the model's example inputs: images
    cropped to its H/W, text tokenized by `tokenizer` to its sequence length."""
    from edgeprune.data import CalibrationData, ImagePreprocess

    first = example_inputs[0]
    if preprocess is None and first.dim() == 4 and first.is_floating_point():
        preprocess = ImagePreprocess(crop=int(first.shape[-1]))
    seq_len = int(first.shape[1]) if first.dim() == 2 and not first.is_floating_point() else 128
    return CalibrationData.load(path, n=None, tokenizer=tokenizer, preprocess=preprocess, seq_len=seq_len, input_names=names)


def resolve_data(calib: Any, train: Any, eval_data: Any, example_inputs: tuple, names: list[str], config: OptimizeConfig,
                 need_eval: bool, say, tokenizer: Any = None, preprocess: Any = None) -> tuple:
    """(calib, train, eval) as CalibrationData, disjoint where eval is concerned (eval may be None: custom evaluate)."""
    import os

    from edgeprune.data import as_data, check_disjoint

    from edgeprune.data import torch_input_specs

    specs = torch_input_specs(example_inputs, names)

    def read(obj):
        # bound to the model's input order: a tokenizer yields (input_ids, token_type_ids, attention_mask), the
        # model may take (input_ids, attention_mask, token_type_ids); fed by position, the mask would be all zeros
        if isinstance(obj, (str, os.PathLike)):
            return _read_path(obj, example_inputs, names, tokenizer, preprocess).bind(specs)
        obj, labelled = _with_labels(obj, len(example_inputs))
        return as_data(obj, example_inputs, input_names=names, labelled=labelled).bind(specs)

    calib_d = read(calib)
    train_d = read(train) if train is not None else None
    eval_d = read(eval_data) if eval_data is not None else None
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
             workdir: Any = None, tokenizer: Any = None, preprocess: Any = None) -> OptimizeResult:
    """Prune `model` for config's target until it meets the latency budget, recovering accuracy with the dense model
    as teacher, scored on held-out data; back off only when the drop still exceeds config.max_drop.

    calib/train/eval_data: anything edgeprune.data.as_data takes (CalibrationData, a path, tensors, a list of input
    tuples, a DataLoader; one yielding (inputs..., labels) items is read as labelled). Paths are read whole:
    text with `tokenizer` (a tokenizer or a Hugging Face folder) to the example inputs' sequence length, image
    folders with `preprocess` (default: an ImageNet-style crop to the example inputs' H/W).
    evaluate(model) -> points (higher is better) replaces the metric."""
    from edgeprune.optimizer.passes import search

    config = config or OptimizeConfig()
    say = progress or (lambda msg: None)
    example_inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    names = list(input_names or [f"input_{i}" for i in range(len(example_inputs))])
    model = model.eval()
    from edgeprune.finite import check_finite_entry

    check_finite_entry(model, example_inputs, where="optimize's model")
    calib_d, train_d, eval_d = resolve_data(calib, train, eval_data, example_inputs, names, config, evaluate is None, say,
                                            tokenizer, preprocess)
    metric, score, drop, score_dense = _scorer(model, example_inputs, names, eval_d, config, evaluate)
    with torch.no_grad():
        from edgeprune.metrics import first_tensor

        kind = distill_kind(metric, first_tensor(model(*example_inputs)))
    # one seed for the run: the sample choice, pruning and recovery (RecoverConfig.seed is for recover_model alone)
    rc = dataclasses.replace(config.recover, seed=config.seed)
    job = Job(calib_d, calib_d.batches(min(32, len(calib_d))), train_d.batches(min(RECOVER_BATCH, len(train_d))), names, model_name,
              metric, score, drop, score_dense, model, kind, rc,
              DEFAULT_MAX_DROP[metric] if config.max_drop is None else config.max_drop, _summary(calib_d, train_d, eval_d), say,
              workdir, resume_keep(rc.checkpoint_dir) if rc.resume else None,
              higher_is_better=getattr(getattr(score, "metric", None), "higher_is_better", True))
    if rc.resume and job.resume_keep is None:
        raise ConfigError(f"nothing to resume in {rc.checkpoint_dir}", hint="run without --resume")
    return search(model, example_inputs, config, job)


__all__ = ["optimize", "OptimizeConfig", "OptimizeResult", "resolve_data"]
