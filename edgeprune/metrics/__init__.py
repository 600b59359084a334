"""The user's quality metric, chosen by name, measured on held-out eval data (pruned model vs dense).

`get_metric(name).bind(dense, batches, labels, input_names)` runs the dense model once and keeps only
what the metric needs from it (predictions, embeddings, neighbour sets); the returned `BoundMetric`
then scores any model on the same batches. Scores are points 0..100 except perplexity (ppl, lower is
better); `BoundMetric.drop(score)` is "how much worse than dense", >= 0 meaning worse.

Eval batches are tuples of positional model inputs, batch dim first. Models may return a tensor, a
tuple/list, a dict or a Hugging Face ModelOutput: `first_tensor` picks the output scored. Two inputs
are located by name when `input_names` is given, else by position:
  * attention mask: the input named "attention_mask", else the 2nd input when it is an integer/bool
    [B,T] tensor of 0/1 with at least one 1 per row (a real mask always keeps a token);
  * input ids (perplexity targets): the input named "input_ids", else the first input.

Metrics:
  top1        accuracy of argmax(logits) vs `labels`
  agreement   % of predictions equal to the dense model's argmax
  cosine      100 x mean cosine of per-sample embeddings vs dense
  neighbours  100 x mean overlap of each sample's k nearest neighbours (cosine) vs dense
  perplexity  exp(total next-token NLL / tokens), padded targets ignored

Predictions (top1, agreement): argmax over the class dim, which is the last dim for [B,C] and [B,T,V]
outputs (per token; padded tokens ignored) and dim 1 for [B,C,H,W...] maps (per pixel). A [B,C] output
is scored per sample, other shapes per prediction element.
Embeddings (cosine, neighbours): [B,T,H] -> mask-aware mean over T; [B,H] -> itself; else flattened.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.metrics.features import (NEIGHBOURS_K, EvalBatch, cosine_score, describe_batch, embeddings, eval_mode,
                                        first_tensor, labels_reference, matched, neighbour_k, neighbour_score,
                                        neighbour_sets, nll_and_tokens, perplexity_score, predictions, run_features)

_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclass(frozen=True)
class Metric:
    """A named quality metric; bind() it to a dense model and eval batches to score other models."""

    name: str
    higher_is_better: bool
    unit: str
    feature: Callable = field(repr=False, compare=False)  # (output, batch) -> per-batch features
    reference: Callable = field(repr=False, compare=False)  # (dense features, labels) -> reference
    score: Callable = field(repr=False, compare=False)  # (features, reference) -> float

    def bind(self, dense: nn.Module, batches: list[tuple[torch.Tensor, ...]], labels: torch.Tensor | None = None,
             input_names: list[str] | None = None) -> "BoundMetric":
        if not batches:
            raise ConfigError(f"{self.name} got no eval batches", hint="give held-out eval data")
        described = [describe_batch(tuple(b), input_names) for b in batches]
        dense_features = run_features(dense, described, self.feature)
        reference = self.reference(dense_features, labels)
        return BoundMetric(self, described, reference, self.score(dense_features, reference))


class BoundMetric:
    """A metric with the dense model's reference (computed once) and its eval batches."""

    def __init__(self, metric: Metric, batches: list[EvalBatch], reference: Any, dense_score: float):
        self.metric = metric
        self.dense_score = dense_score
        self._batches = batches
        self._reference = reference

    def __call__(self, model: nn.Module) -> float:
        return self.metric.score(run_features(model, self._batches, self.metric.feature), self._reference)

    def drop(self, score: float) -> float:
        return self.dense_score - score if self.metric.higher_is_better else score - self.dense_score

    def __repr__(self) -> str:
        return f"BoundMetric({self.metric.name}, dense_score={self.dense_score:.4g} {self.metric.unit})"


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("top1", True, "points", predictions, labels_reference, matched),
    Metric("agreement", True, "points", predictions, lambda pred, _labels: pred, matched),
    Metric("perplexity", False, "ppl", nll_and_tokens, lambda stats, _labels: None, perplexity_score),
    Metric("cosine", True, "points", embeddings, lambda emb, _labels: emb, cosine_score),
    Metric("neighbours", True, "points", embeddings,
           lambda emb, _labels: neighbour_sets(emb, neighbour_k(emb.shape[0])), neighbour_score),
)}


def get_metric(name: str) -> Metric:
    """The registered metric `name`; ConfigError listing the known names otherwise (never a fallback)."""
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(f"unknown metric {name!r}", hint=f"choose one of: {', '.join(METRICS)}") from None


def _vocab_size(model: nn.Module) -> int | None:
    """Input-embedding rows: HF get_input_embeddings(), else the first nn.Embedding in the module tree
    (not any Embedding: BERT's 512 position rows would make a 512-wide encoder look like an LM)."""
    getter = getattr(model, "get_input_embeddings", None)
    emb = getter() if callable(getter) else None
    if not isinstance(emb, nn.Embedding):
        emb = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    return emb.num_embeddings if emb is not None else None


def default_metric_name(model: nn.Module, example_inputs: tuple, input_names: list[str] | None = None) -> str:
    """The metric for the model's head, from its class name and one forward pass on example_inputs:
      * causal LM -> "perplexity": class name ends with "ForCausalLM"/"LMHeadModel", or the output is
        [B,T,V] with T = the input ids' length and V = the input-embedding vocab size;
      * classifier logits [B,C] -> "agreement";
      * other [B,T,H] hidden states (encoders, embedding models) -> "neighbours";
      * anything else (segmentation maps [B,C,H,W], ...) -> "cosine".
    """
    if type(model).__name__.endswith(_LM_SUFFIXES):
        return "perplexity"
    with eval_mode(model):
        out = first_tensor(model(*example_inputs))
    if out.dim() == 2:
        return "agreement"
    if out.dim() == 3:
        ids = describe_batch(tuple(example_inputs), input_names).ids
        same_len = ids is not None and ids.dim() == 2 and tuple(ids.shape) == tuple(out.shape[:2])
        return "perplexity" if same_len and out.shape[-1] == _vocab_size(model) else "neighbours"
    return "cosine"


__all__ = ["Metric", "BoundMetric", "METRICS", "NEIGHBOURS_K", "get_metric", "default_metric_name",
           "first_tensor", "eval_mode", "predictions", "embeddings", "nll_and_tokens", "neighbour_sets",
           "EvalBatch", "describe_batch", "run_features"]
