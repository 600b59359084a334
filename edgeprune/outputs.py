"""A model's outputs as a flat list of tensors, whatever container they come in.

Hugging Face models return ModelOutput dataclasses holding None (no loss without labels, no attentions) and
Cache objects (past key/values); user models return tuples, dicts and nested mixes. Exporters, runtimes and
metrics need plain tensors in a fixed order, so everything goes through flatten_outputs.
"""
from __future__ import annotations

from typing import Any

import torch


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """Tensors of `out` depth-first, in order: None and Python scalars dropped, ModelOutput via to_tuple (which
    already drops its None fields), a Cache as (key, value) per layer, dicts by insertion order."""
    if out is None or isinstance(out, (bool, int, float, str)):
        return []
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):  # transformers.ModelOutput
        out = out.to_tuple()
    elif _is_cache(out):
        out = _cache_pairs(out)
    elif isinstance(out, dict):
        out = list(out.values())
    flat: list[torch.Tensor] = []
    for item in out:
        flat.extend(flatten_outputs(item))
    return flat


def _is_cache(obj: Any) -> bool:
    return type(obj).__name__.endswith("Cache") and (hasattr(obj, "layers") or hasattr(obj, "to_legacy_cache"))


def _cache_pairs(cache: Any) -> list:
    """[(key, value) per layer] of a transformers Cache (v5: .layers[i].keys/.values; v4: to_legacy_cache())."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(getattr(layer, "keys", None), getattr(layer, "values", None)) for layer in layers]
    return list(cache.to_legacy_cache())


def output_names(out: Any) -> list[str]:
    """Names matching flatten_outputs(out): ModelOutput field names, present.{i}.key/value for a cache,
    output_{i} otherwise."""
    names: list[str] = []
    if hasattr(out, "to_tuple") and hasattr(out, "keys"):
        for key in out.keys():
            value = out[key]
            if _is_cache(value):
                names += [f"present.{i}.{kv}" for i, pair in enumerate(_cache_pairs(value)) for kv, t in zip(("key", "value"), pair)
                          if isinstance(t, torch.Tensor)]
            else:
                n = len(flatten_outputs(value))
                names += [key] if n == 1 else [f"{key}.{j}" for j in range(n)]
        return names
    return [f"output_{i}" for i in range(len(flatten_outputs(out)))]


class FlatOutputs(torch.nn.Module):
    """forward(*tensors) -> a tuple of the wrapped model's output tensors (flatten_outputs), so exporters see plain
    tensors in a fixed order. Hugging Face models with a KV cache are called with use_cache=`use_cache`: False by
    default (the cache is not an output), True to export a decoder whose present key/values are outputs."""

    def __init__(self, model: torch.nn.Module, use_cache: bool | None = None):
        super().__init__()
        self.model = model
        self.use_cache = use_cache

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kwargs = {} if self.use_cache is None else {"use_cache": self.use_cache}
        return tuple(flatten_outputs(self.model(*tensors, **kwargs)))


def for_export(model: torch.nn.Module, example_inputs, past_key_values: bool = False):
    """(module to export, its output names, its flat output tensors on the example inputs: the export's reference).
    A model returning one tensor or a flat tuple of tensors is exported as it is; a ModelOutput, a dict, None fields
    or a cache are flattened by FlatOutputs (names from the fields)."""
    import inspect

    config = getattr(model, "config", None)
    try:
        takes = "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        takes = False
    cached = takes and getattr(config, "use_cache", None) is not None
    wrapped = FlatOutputs(model, use_cache=past_key_values if cached else None).eval()
    kwargs = {"use_cache": past_key_values} if cached else {}
    with torch.inference_mode():
        raw = model(*example_inputs, **kwargs)
    plain = isinstance(raw, torch.Tensor) or (isinstance(raw, tuple) and all(isinstance(t, torch.Tensor) for t in raw))
    return (model if plain and not cached else wrapped), output_names(raw), flatten_outputs(raw)
