"""NaN / Inf checks at every entry: a model's weights and buffers, and example inputs.

A non-finite weight does not fail where it sits: it turns every output NaN, and the first visible symptom is
an export check ("max abs diff nan") or a Cholesky failure far from the cause. So each entry (load_model, and
the prune / export / optimize verbs) names the parameter before anything runs. Data samples are checked where
they are read (edgeprune.data.core.check_finite), naming the file, sample and input.
"""
from __future__ import annotations

from typing import Any

import torch

from edgeprune.errors import ModelLoadError


def check_model_finite(model: torch.nn.Module, where: str = "the model") -> None:
    """Raise ModelLoadError naming the first parameter or buffer of `model` that holds NaN or Inf."""
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if not t.is_floating_point() or t.is_meta:
                continue
            bad = ~torch.isfinite(t.detach())
            if bad.any():
                what = "NaN" if torch.isnan(t.detach()).any() else "Inf"
                first = tuple(int(i) for i in bad.nonzero()[0])
                raise ModelLoadError(f"{where}: {kind} '{name}' holds {what} ({int(bad.sum())} of {t.numel()} values, "
                                     f"first at index {first})",
                                     hint="repair or re-train that weight: every output computed through it is NaN")


def check_inputs_finite(example_inputs: Any, where: str = "the model") -> None:
    """Raise ModelLoadError naming the first float example input holding NaN or Inf."""
    items = example_inputs.items() if isinstance(example_inputs, dict) else enumerate(
        example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,))
    for key, t in items:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
            what = "NaN" if torch.isnan(t).any() else "Inf"
            raise ModelLoadError(f"{where}: example input {key!r} {tuple(t.shape)} holds {what}",
                                 hint="give finite example inputs (they fix the shapes and are run through the model)")


def check_finite_entry(model: torch.nn.Module, example_inputs: Any, where: str = "the model") -> None:
    check_model_finite(model, where)
    if example_inputs is not None:
        check_inputs_finite(example_inputs, where)
