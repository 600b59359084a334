"""One view of a layer's weight for every transform: (out, in, *kernel), whatever the module stores.

Linear and Conv keep their weight as (out, in, *kernel) already. transformers' GPT-2 `Conv1D` is a Linear whose
weight is stored transposed, (in, out), with the output size in `.nf`; it is recognised by name so that
transformers stays optional. Pruning (rows = output channels) and sparsity (N:M along inputs) each flatten this
view their own way; the storage quirk lives only here.
"""
from __future__ import annotations

import torch
from torch import nn


def is_hf_conv1d(mod: nn.Module) -> bool:
    """transformers' GPT-2 Conv1D: y = x @ W + b with W (in, out)."""
    return type(mod).__name__ == "Conv1D" and hasattr(mod, "nf")


def linear_weight(mod: nn.Module) -> torch.Tensor:
    """The weight as (out, in, *kernel), detached; a view, not a copy."""
    w = mod.weight.detach()
    return w.t() if is_hf_conv1d(mod) else w


def set_linear_weight(mod: nn.Module, w: torch.Tensor, rows: slice = slice(None)) -> None:
    """Write output rows `rows` of the (out, in, *kernel) view back into the module's own layout."""
    with torch.no_grad():
        if is_hf_conv1d(mod):
            mod.weight[:, rows] = w.t().to(mod.weight.dtype)
        else:
            mod.weight[rows] = w.reshape(mod.weight[rows].shape).to(mod.weight.dtype)
