"""Per-batch features and scores behind edgeprune.metrics (see the package docstring for the rules).

Features are computed batch by batch so only small tensors stay in memory: flat argmax predictions,
per-sample embeddings [B,D], or [[NLL, tokens]] for perplexity (never whole [B,T,V] logits).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import ConfigError

NEIGHBOURS_K = 10
TOP1_HINT = "top1 needs labelled eval data: a class-per-folder image tree, a CSV text,label, or an npz with 'labels'"
OUTPUT_ATTRS = ("logits", "last_hidden_state")


def first_tensor(out: Any) -> torch.Tensor:
    """The output a metric scores: the tensor itself, `logits` / `last_hidden_state` (attribute of a HF
    ModelOutput, or dict key), else the first tensor found depth-first in a dict (insertion order),
    tuple, list or `to_tuple()`."""
    if isinstance(out, torch.Tensor):
        return out
    for attr in OUTPUT_ATTRS:
        value = out.get(attr) if isinstance(out, dict) else getattr(out, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, dict):
        items = list(out.values())
    elif isinstance(out, (tuple, list)):
        items = list(out)
    elif hasattr(out, "to_tuple"):
        items = list(out.to_tuple())
    else:
        items = []
    for item in items:
        try:
            return first_tensor(item)
        except ConfigError:
            continue
    raise ConfigError(f"model output {type(out).__name__} holds no tensor to score",
                      hint="return a tensor, a tuple/dict of tensors or a ModelOutput")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """model.eval() + no_grad, then every submodule's own training flag back (they may differ)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in flags:
            m.training = training


@dataclass(frozen=True)
class EvalBatch:
    """One eval batch and the two inputs metrics look up in it."""

    inputs: tuple[torch.Tensor, ...]
    mask: torch.Tensor | None  # [B,T] attention mask, or None
    mask_named: bool  # True when the mask came from input_names (a shape mismatch is then an error)
    ids: torch.Tensor | None  # [B,T] input ids (perplexity targets), or None


def _looks_like_mask(t: Any) -> bool:
    # integer/bool [B,T], only 0/1, every row keeps a token: token_type_ids (all 0 rows) do not pass
    if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.dtype.is_floating_point or t.is_complex():
        return False
    return bool(((t == 0) | (t == 1)).all()) and bool((t != 0).any(dim=1).all())


def _index(names: list[str] | None, name: str) -> int | None:
    return names.index(name) if names and name in names else None


def describe_batch(inputs: tuple, names: list[str] | None) -> EvalBatch:
    i_mask, i_ids = _index(names, "attention_mask"), _index(names, "input_ids")
    if i_mask is not None:
        mask = inputs[i_mask]
    else:
        mask = inputs[1] if len(inputs) > 1 and _looks_like_mask(inputs[1]) else None
    ids = inputs[i_ids if i_ids is not None else 0] if inputs else None
    return EvalBatch(inputs, mask, i_mask is not None, ids)


def run_features(model: nn.Module, batches: list[EvalBatch], feature: Callable) -> torch.Tensor:
    """feature(output, batch) for every batch, concatenated along dim 0 (one forward pass per batch)."""
    parts = []
    with eval_mode(model):
        for b in batches:
            out = first_tensor(model(*b.inputs)).float()
            n = b.inputs[0].shape[0] if b.inputs and b.inputs[0].dim() else None
            if out.dim() == 0 or (n is not None and out.shape[0] != n):
                raise ConfigError(f"model output {tuple(out.shape)} has no batch dim of size {n}",
                                  hint="the first output must be batch-first")
            parts.append(feature(out, b))
    if len({p.shape[1:] for p in parts}) > 1:
        raise ConfigError(f"eval batches give outputs of different shapes {[tuple(p.shape) for p in parts]}",
                          hint="pad every eval batch to the same shape")
    return torch.cat(parts)


def _mask_for(out: torch.Tensor, b: EvalBatch) -> torch.Tensor | None:
    """The batch's mask when it fits the output's [B,T]; a named mask that does not fit is an error."""
    if b.mask is None:
        return None
    if out.dim() >= 2 and tuple(b.mask.shape) == tuple(out.shape[:2]):
        return b.mask
    if b.mask_named:
        raise ConfigError(f"attention_mask {tuple(b.mask.shape)} does not match the model output "
                          f"{tuple(out.shape)}", hint="the mask must be [batch, tokens] of the output")
    return None  # the 2nd input only looked like a mask


# ---- features computed per batch ----------------------------------------------------------------

def predictions(out: torch.Tensor, b: EvalBatch) -> torch.Tensor:
    """Flat argmax predictions, -1 where the token is padding. [B,C] -> [B]; [B,T,V] -> [B*T];
    [B,C,H,W] -> [B*H*W] (class dim 1 for maps)."""
    if out.dim() < 2:
        raise ConfigError(f"model output {tuple(out.shape)} has no class dim to take argmax over",
                          hint="use --metric cosine for non-logit outputs")
    pred = out.argmax(dim=-1 if out.dim() <= 3 else 1)
    mask = _mask_for(out, b) if out.dim() == 3 else None
    if mask is not None:
        pred = pred.masked_fill(mask == 0, -1)  # padded tokens are not predictions
    return pred.reshape(-1)


def embeddings(out: torch.Tensor, b: EvalBatch) -> torch.Tensor:
    """Per-sample embeddings [B,D]: mask-aware mean over T of [B,T,H]; [B,H] itself; else flattened."""
    if out.dim() == 3:
        mask = _mask_for(out, b)
        if mask is None:
            return out.mean(dim=1)
        m = mask.unsqueeze(-1).to(out.dtype)  # [B,T,1]: padded hidden states weigh 0
        return (out * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)
    return out.reshape(out.shape[0], -1)


def nll_and_tokens(out: torch.Tensor, b: EvalBatch) -> torch.Tensor:
    """[[total next-token NLL, scored tokens]] of logits [B,T,V]; targets ids[:,1:], masked ones skipped."""
    ids = b.ids
    if out.dim() != 3 or ids is None or ids.dim() != 2 or ids.dtype.is_floating_point \
            or tuple(ids.shape) != tuple(out.shape[:2]):
        raise ConfigError(f"perplexity needs logits [B,T,V] and integer input_ids [B,T]; got output "
                          f"{tuple(out.shape)}, ids {None if ids is None else tuple(ids.shape)}",
                          hint="use perplexity for causal LMs only, or name the input 'input_ids'")
    # position t predicts token t+1 (same shift as Hugging Face's causal LM loss)
    logits, targets = out[:, :-1], ids[:, 1:].long()
    nll = F.cross_entropy(logits.reshape(-1, out.shape[-1]), targets.reshape(-1), reduction="none")
    mask = _mask_for(out, b)
    keep = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask[:, 1:] != 0
    nll = nll.double().reshape(targets.shape)[keep]
    return torch.tensor([[nll.sum().item(), float(keep.sum())]], dtype=torch.float64)


# ---- scores from features and the dense reference -----------------------------------------------

def matched(pred: torch.Tensor, target: torch.Tensor) -> float:
    keep = (pred >= 0) & (target >= 0)  # -1 padding, -100 ignored labels
    if not bool(keep.any()):
        raise ConfigError("no prediction left to score (every position is padding or ignored)")
    return float(100.0 * (pred[keep] == target[keep]).double().mean())


def labels_reference(pred: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    if labels is None:
        raise ConfigError("top1 has no labels", hint=TOP1_HINT)
    flat = torch.as_tensor(labels).reshape(-1).long()
    if flat.numel() != pred.numel():
        raise ConfigError(f"top1 got {flat.numel()} labels for {pred.numel()} predictions",
                          hint="give one label per eval sample, in batch order")
    return flat


def cosine_score(emb: torch.Tensor, ref: torch.Tensor) -> float:
    return float(100.0 * F.cosine_similarity(emb.double(), ref.double(), dim=-1).mean())


def neighbour_sets(emb: torch.Tensor, k: int) -> torch.Tensor:
    """[N,N] bool: row i marks sample i's k nearest neighbours by cosine, itself excluded."""
    e = F.normalize(emb.double(), dim=-1)
    sim = e @ e.T
    sim.fill_diagonal_(-math.inf)
    idx = sim.topk(k, dim=1).indices
    return torch.zeros_like(sim, dtype=torch.bool).scatter_(1, idx, True)


def neighbour_k(n: int) -> int:
    # k = N-1 would make every other sample a neighbour and the score a constant 100: keep one out
    if n < 3:
        raise ConfigError(f"neighbours needs at least 3 eval samples, got {n}", hint="add eval data")
    return min(NEIGHBOURS_K, n - 2)


def neighbour_score(emb: torch.Tensor, ref: torch.Tensor) -> float:
    k = neighbour_k(ref.shape[0])
    overlap = (neighbour_sets(emb, k) & ref).sum(dim=1).double() / k
    return float(100.0 * overlap.mean())


def perplexity_score(stats: torch.Tensor, _ref: Any = None) -> float:
    nll, tokens = stats.sum(dim=0).tolist()
    if tokens == 0:
        raise ConfigError("perplexity has no target token to score", hint="use sequences of 2+ unpadded tokens")
    return math.exp(nll / tokens)
