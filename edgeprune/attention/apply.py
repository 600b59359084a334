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

    example_inputs / calib: anything edgeprune.data.as_data takes (a tensor, tuple of tensors, dict, list of those;
    dicts are passed as keyword arguments). With allocation='calibrated' and calibration data, each layer gets a
    density from config.density_grid under the global target; otherwise every layer gets config.density.
    Returns the model (and the per-layer report).
    """
    from edgeprune.attention import calibrate, hf
    from edgeprune.data import as_data
    from edgeprune.models import module_and_inputs

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
    device = next(model.parameters(), torch.empty(0)).device
    calibrated = cfg.allocation == "calibrated"
    if (calibrated or cfg.compensate == "auto") and cfg.top_k is None and calib is not None and cfg.density < 1.0:
        # the first calib_samples samples in one (args, kwargs) batch: kwargs when calib came as dicts
        batches = as_data(calib).head(cfg.calib_samples).calls(device=device)
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
        checked = as_data(example_inputs).calls(device=device)
        try:
            calibrate.run_batches(model, checked)
        except Exception as err:
            raise AttentionSparsityError(f"{type(model).__name__} with sparse attention failed on the example inputs: "
                                         f"{type(err).__name__}: {err}", hint="check block_size/window against the "
                                         "sequence length, or report the model") from err
    report = [AttentionLayerResult(n, layers[n].causal, layers[n].density, errors.get(n), layers[n].compensate)
              for n in modules]
    return (model, report) if return_report else model


def attention_layers(model: nn.Module) -> dict[str, SparseAttention]:
    """The SparseAttention settings attached to a model by sparsify_attention."""
    return {n.rsplit(".sparse_attention", 1)[0]: m for n, m in model.named_modules() if isinstance(m, SparseAttention)}
