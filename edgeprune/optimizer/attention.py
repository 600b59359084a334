"""Sparse attention inside `optimize`: decide whether it pays on (profile, runtime), apply it after pruning.

The decision is one record in plan.json / report.json ("attention"):
  {"applied": bool, "reason": str, "source": measured|estimate|forced|off, "seq", "heads", "head_dim", "causal",
   "dense_ms", "sparse_ms" (measured) or "dense_cost", "sparse_cost" (estimate, MAC-equivalents), "saving",
   "config": AttentionSparsityConfig fields, "layers": {attention module: density} once applied}
It pays when the predicted saving on the attention layers is >= PAYS. `apply_attention` re-applies a record (the
per-layer densities it holds make `edgeprune apply` reproduce the model without calibration data).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from edgeprune.attention.config import AttentionSparsityConfig
from edgeprune.errors import ConfigError

if TYPE_CHECKING:
    from edgeprune.targets.target import Target

PAYS = 0.10  # least predicted saving on the attention layers worth the approximation
MODES = ("auto", "off")


def decide_attention(model: nn.Module, example_inputs: tuple, attention: str | AttentionSparsityConfig | None,
                     target: Target, *, measured: bool, threads: int | None = None,
                     say: Callable[[str], None] = lambda msg: None) -> dict[str, Any] | None:
    """The attention record for plan.json (None when attention=None: the plan keeps no entry)."""
    if attention is None:
        return None
    if isinstance(attention, AttentionSparsityConfig):
        return {"applied": True, "source": "forced", "reason": "sparse attention requested with an explicit config",
                "config": dataclasses.asdict(attention)}
    if attention not in MODES:
        raise ConfigError(f"attention must be 'auto', 'off', None or an AttentionSparsityConfig, got {attention!r}",
                          hint="e.g. --sparse-attention auto")
    if attention == "off":
        return {"applied": False, "source": "off", "reason": "sparse attention turned off"}
    shape = attention_shape(model, example_inputs)
    if shape is None:
        return {"applied": False, "source": "auto", "reason": "no Hugging Face self-attention layer in the model"}
    cfg = AttentionSparsityConfig()
    say(f"{'timing' if measured else 'estimating'} one attention layer dense vs sparse at length {shape.seq}")
    return _judge(shape, cfg, target, measured, threads)


def attention_shape(model: nn.Module, example_inputs: tuple):
    """AttentionShape of the model's widest attention layer at the example inputs' length (one forward pass)."""
    from edgeprune.attention import hf
    from edgeprune.attention.latency import AttentionShape

    modules = hf.attention_modules(model)
    if not modules:
        return None
    seen: list[int] = []

    def hook(mod, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        seen.append(int(hidden.shape[1]))

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in modules.values()]
    try:
        with torch.inference_mode():
            model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    # heads differ per layer once pruned; dense and sparse both scale linearly in heads, so the widest decides
    heads, head_dim = max((_heads(m) for m in modules.values()), key=lambda hd: hd[0] * hd[1])
    causal = any(bool(getattr(m, "is_causal", False)) for m in modules.values())
    return AttentionShape(heads, max(seen), head_dim, causal, int(example_inputs[0].shape[0]))


def _heads(mod: nn.Module) -> tuple[int, int]:
    """(heads, head dim) of a BERT-family (num_attention_heads) or GPT-2 (num_heads) attention module."""
    heads = getattr(mod, "num_attention_heads", None) or getattr(mod, "num_heads")
    return int(heads), int(getattr(mod, "attention_head_size", None) or getattr(mod, "head_dim"))


def _judge(shape, cfg: AttentionSparsityConfig, target: Target, measured: bool, threads) -> dict[str, Any]:
    from edgeprune.attention.latency import break_even_seq, estimate_attention, measure_attention

    runtime = target.runtime
    cost = (measure_attention(shape, cfg, target, threads=threads)
            if measured else estimate_attention(shape, cfg))
    # every block kept: the sparse layer computes all of dense plus the block selection, so it cannot pay, whatever
    # a noisy timing of two near-equal layers says
    pays = cost.saving >= PAYS and cost.kept < cost.blocks
    where = f"{runtime} on this machine" if measured else f"analytic estimate for {target.name}"
    numbers = (f"dense {cost.dense:.3f} ms vs sparse {cost.sparse:.3f} ms per layer" if measured
               else f"dense {cost.dense / 1e6:.1f}M vs sparse {cost.sparse / 1e6:.1f}M MAC-equivalents per layer")
    if pays:
        reason = f"pays at length {shape.seq}: {numbers} ({where}), saving {cost.saving:.0%} >= {PAYS:.0%}"
    else:
        even = break_even_seq(shape, cfg, PAYS)
        forced = (cfg.window + 1 if shape.causal else 2 * cfg.window + 1) + cfg.global_blocks
        blocks = (f"{cost.blocks} block(s) of {cfg.block_size}, every one kept (window + global blocks alone force "
                  f"{forced})" if cost.kept >= cost.blocks else f"{cost.kept} of {cost.blocks} blocks kept")
        reason = (f"does not pay at length {shape.seq}: {blocks}; {numbers} ({where}), saving {cost.saving:.0%} < "
                  f"{PAYS:.0%}" + (f"; pays from about length {even} (estimate)" if even else ""))
    record: dict[str, Any] = {"applied": pays, "source": cost.source, "reason": reason, "runtime": runtime,
                              **dataclasses.asdict(shape), "saving": round(cost.saving, 4), "blocks": cost.blocks,
                              "kept_blocks": cost.kept, "config": dataclasses.asdict(cfg)}
    unit = "ms" if measured else "cost"
    record[f"dense_{unit}"], record[f"sparse_{unit}"] = cost.dense, cost.sparse
    return record


def apply_attention(record: dict[str, Any] | None, model: nn.Module, example_inputs, calib=None,
                    where: str = "plan.json") -> nn.Module:
    """Give `model` the record's sparse attention (unchanged when none is applied).

    With per-layer densities in the record they are set as recorded (reproducible without calibration data);
    otherwise `sparsify_attention` calibrates them on `calib`."""
    if not record or not record.get("applied"):
        return model
    from edgeprune.attention import attention_layers, sparsify_attention

    cfg = config_from(record, where)
    layers = record.get("layers")
    if layers:
        cfg = dataclasses.replace(cfg, allocation="uniform")
        calib = None
    model = sparsify_attention(model, example_inputs, cfg, calib=calib)
    for name, density in (layers or {}).items():
        found = attention_layers(model)
        if name not in found:
            raise ConfigError(f"{where}: field 'attention.layers' names '{name}', which is no attention layer of the model",
                              hint="re-create the plan for this model")
        found[name].density = density
    return model


def config_from(record: dict[str, Any], where: str = "plan.json") -> AttentionSparsityConfig:
    fields = {f.name for f in dataclasses.fields(AttentionSparsityConfig)}
    given = record.get("config") or {}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ConfigError(f"{where}: field 'attention.config' has unknown key(s) {unknown}",
                          hint=f"use AttentionSparsityConfig fields: {sorted(fields)}")
    return AttentionSparsityConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})


def with_layers(record: dict[str, Any] | None, model: nn.Module) -> dict[str, Any] | None:
    """The record plus the per-layer densities `model` ended up with (what `apply` re-applies)."""
    if not record or not record.get("applied"):
        return record
    from edgeprune.attention import attention_layers

    return {**record, "layers": {n: m.density for n, m in attention_layers(model).items()}}
