"""sparsify_attention: give every Hugging Face attention layer block-sparse attention (METHODS.md §7)."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn

from edgeprune.attention.config import AttentionSparsityConfig, AttentionSparsityError
from edgeprune.attention.module import SparseAttention


@dataclasses.dataclass
class AttentionLayerResult:
    name: str
    causal: bool
    density: float | None  # None with top_k
    errors: dict[float, float] | None  # calibration: density -> relative attention-output error
    compensate: bool = True  # pooled-block compensation on (chosen per layer on calibration data with "auto")


def sparsify_attention(model: nn.Module, example_inputs: Any = None, config: AttentionSparsityConfig | None = None,
                       calib: Any = None, *, inplace: bool = False, return_report: bool = False):
    """Replace the attention of a HF BERT-family encoder or GPT-2-style decoder by block-sparse attention.

    example_inputs / calib: a tensor, tuple of tensors, dict, or list of those (as for `sparsify`). With
    allocation='calibrated' and calibration data, each layer gets a density from config.density_grid under the
    global target; otherwise every layer gets config.density. Returns the model (and the per-layer report).
    """
    from edgeprune.attention import calibrate, hf
    from edgeprune.models import module_and_inputs
    from edgeprune.sparsity.calib import as_batches

    cfg = config or AttentionSparsityConfig()
    model, example_inputs = module_and_inputs(model, example_inputs, "sparsify_attention", AttentionSparsityError)
    modules = hf.attention_modules(model, cfg.ignore)
    if not modules:
        raise AttentionSparsityError(f"no Hugging Face self-attention module found in {type(model).__name__}",
                                     hint="pass a transformers BERT-family encoder or GPT-2-style decoder, or use "
                                          "SparseAttention directly in your own attention")
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    modules = hf.attention_modules(model, cfg.ignore)
    hf.use_sparse_impl(model)
    layers = {n: SparseAttention.from_config(cfg, causal=bool(getattr(m, "is_causal", False))) for n, m in modules.items()}
    errors: dict[str, dict] = {}
    batches = as_batches(calib)
    calibrated = cfg.allocation == "calibrated"
    if (calibrated or cfg.compensate == "auto") and cfg.top_k is None and batches and cfg.density < 1.0:
        batches = _limit(batches, cfg.calib_samples)
        records = calibrate.capture(model, modules, batches)
        grid = cfg.density_grid if calibrated else (cfg.density,)
        table = calibrate.layer_errors(layers, records, grid, choose_compensation=cfg.compensate == "auto")
        densities = calibrate.allocate(table, cfg.density, grid) if calibrated else {n: cfg.density for n in table}
        for name, density in densities.items():
            layers[name].density = density
            layers[name].compensate = table[name].compensate[density]
            errors[name] = table[name].errors
    for name, m in modules.items():
        m.sparse_attention = layers[name]
    if example_inputs is not None:  # one checked run: a config that cannot run fails here, naming the model
        try:
            calibrate.run_batches(model, as_batches(example_inputs))
        except Exception as err:
            raise AttentionSparsityError(f"{type(model).__name__} with sparse attention failed on the example inputs: "
                                         f"{type(err).__name__}: {err}", hint="check block_size/window against the "
                                         "sequence length, or report the model") from err
    report = [AttentionLayerResult(n, layers[n].causal, layers[n].density, errors.get(n), layers[n].compensate)
              for n in modules]
    return (model, report) if return_report else model


def _limit(batches, n: int):
    """The first n samples (dim 0) of the calibration batches."""
    out, left = [], n
    for args, kwargs in batches:
        if left <= 0:
            break
        first = next((t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)), None)
        size = int(first.shape[0]) if first is not None and first.ndim else 1
        cut = lambda t: t[:left] if isinstance(t, torch.Tensor) and t.ndim else t  # noqa: E731
        out.append((tuple(cut(a) for a in args), {k: cut(v) for k, v in kwargs.items()}))
        left -= size
    return out


def attention_layers(model: nn.Module) -> dict[str, SparseAttention]:
    """The SparseAttention settings attached to a model by sparsify_attention."""
    return {n.rsplit(".sparse_attention", 1)[0]: m for n, m in model.named_modules() if isinstance(m, SparseAttention)}
