"""`prune(model, example_inputs, config, calib)`: plan widths, then remove and compensate group by group.

Order of work:
1. groups: transformer heads/FFN (hf.py) or CNN channel groups (graph.py, Torch-Pruning DG);
2. plan: how many units each group loses (local ratio, or a global ranking), rounded to the channel
   multiple; bad plans (zero width, nothing prunable) raise before the model is touched;
3. sequential pass in forward order: capture the group's consumer inputs on the *already pruned*
   prefix (so errors do not compound), score units, choose, refit consumers, remove physically.
The input model is never modified; a pruned deep copy is returned.
"""
from __future__ import annotations

import copy
import fnmatch
import logging
import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from edgeprune.data import as_data
from edgeprune.errors import ConfigError, PruningError
from edgeprune.pruning import importance as imp
from edgeprune.pruning.compensate import compensate
from edgeprune.pruning.config import StructuredConfig
from edgeprune.pruning.graph import channel_groups
from edgeprune.pruning.group import Group
from edgeprune.pruning.hf import has_transformer_blocks, transformer_groups
from edgeprune.pruning.stats import capture

log = logging.getLogger("edgeprune.pruning")
CHUNK = 32  # samples per calibration forward (bounds activation memory)


def _calibration_chunks(calib: Any, example_inputs: tuple, n_samples: int, model: nn.Module) -> list[tuple]:
    """The first n_samples of `calib` (anything edgeprune.data.as_data takes; None = example_inputs) as
    chunks of CHUNK positional-input tuples on the model's device, every sample used."""
    device = next(model.parameters(), torch.empty(0)).device
    return as_data(calib, example_inputs).head(n_samples).batches(CHUNK, drop_last=False, device=device)


def find_groups(model: nn.Module, example_inputs: tuple, config: StructuredConfig,
                note: Callable[[str], None] = lambda line: None) -> list[Group]:
    unit = config.unit
    transformer = has_transformer_blocks(model)
    if unit in ("heads", "ffn") or (unit == "auto" and transformer):
        kinds = ("heads", "ffn") if unit == "auto" else (unit,)
        groups = transformer_groups(model, kinds, config.ignored, config.strict, note)
        if not groups and not transformer:
            raise PruningError(f"unit='{unit}' but the model has no recognised attention/FFN blocks",
                               hint="use unit='channels' for CNNs/MLPs (BERT, ViT, GPT-2 and LLaMA-style blocks are recognised)")
    else:
        groups = channel_groups(model, example_inputs, config.ignored, config.strict, note)
    if not groups:
        raise ConfigError("nothing left to prune: every prunable group is ignored or reaches the model output",
                          hint="shorten ignore= (it may match every layer)")
    return groups


def _check_per_layer(config: StructuredConfig, groups: list[Group]) -> None:
    """A per_layer name or glob that matches no group is a typo or a plan for another model: refuse it."""
    names = [g.name for g in groups]
    for pattern, _ in config.per_layer or ():
        if not any(n == pattern or fnmatch.fnmatchcase(n, pattern) for n in names):
            shown = ", ".join(names[:4]) + (f", ... ({len(names)} groups)" if len(names) > 4 else "")
            raise ConfigError(f"per_layer '{pattern}' matches no prunable group of this model (its groups: {shown})",
                              hint="check the name, or use the plan written for this model")


def _step(group: Group, multiple: int) -> int:
    """Kept widths move in steps of this many units (channel multiple, grouped-conv uniformity)."""
    m_units = multiple // math.gcd(multiple, group.unit_width)
    return math.lcm(m_units, group.uniform)


def planned_removals(groups: list[Group], config: StructuredConfig, scores: dict[str, torch.Tensor] | None) -> dict[str, int]:
    """group name -> number of units to remove."""
    mult = config.multiple()
    keep: dict[str, int] = {}
    if config.scope == "global" and scores is not None:
        # rank units of all groups by score normalised to its group's mean; remove the lowest
        entries = []
        for g in groups:
            s = scores[g.name]
            s = s / s.mean().clamp_min(1e-30)
            entries += [(float(v), g.name) for v in s]
        total = sum(g.n_units for g in groups)
        budget = int(round(config.ratio * total))
        removed = {g.name: 0 for g in groups}
        floor = {g.name: max(config.min_keep, _step(g, mult)) for g in groups}
        sizes = {g.name: g.n_units for g in groups}
        for _, name in sorted(entries):
            if budget <= 0:
                break
            if sizes[name] - removed[name] > floor[name]:
                removed[name] += 1
                budget -= 1
        target = {name: sizes[name] - r for name, r in removed.items()}
    else:
        target = {g.name: g.n_units * (1.0 - config.ratio_for(g.name)) for g in groups}
    for g in groups:
        step = _step(g, mult)
        want = target[g.name]
        if want >= g.n_units or g.n_units % step:
            kept = g.n_units if want >= g.n_units - 1e-9 or g.n_units % step else None
            if kept is None:
                kept = int(round(want / step)) * step
        else:
            kept = int(round(want / step)) * step
        if kept == 0 and want >= 0.5 * step:  # half a step or more asked (a 1-head stage at 50%): keep one step
            kept = step
        if kept < max(config.min_keep, 1):
            raise ConfigError(f"'{g.name}' would keep {kept} of {g.n_units} {g.kind} (min_keep={config.min_keep})",
                              hint="lower the ratio for it (per_layer=) or add it to ignore=")
        keep[g.name] = min(kept, g.n_units)
    return {g.name: g.n_units - keep[g.name] for g in groups}


def choose_units(scores: torch.Tensor, k: int, uniform: int) -> list[int]:
    """Indices of the k least important units; with `uniform` blocks, the same local slots in each."""
    if uniform > 1:
        per = scores.numel() // uniform
        slot = scores.reshape(uniform, per).sum(0)
        slots = torch.argsort(slot)[: k // uniform].tolist()
        return sorted(b * per + s for b in range(uniform) for s in slots)
    return sorted(torch.argsort(scores, stable=True)[:k].tolist())


def _order(model: nn.Module, groups: list[Group], batch: tuple) -> list[Group]:
    """Groups sorted by when their first consumer runs in the forward pass."""
    order: dict[nn.Module, int] = {}
    def hook(mod, args):  # a pre-hook must return None, or its value replaces the input
        order.setdefault(mod, len(order))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(*tuple(t[:1] for t in batch))
    finally:
        for h in handles:
            h.remove()
    return sorted(groups, key=lambda g: min(order.get(c.module, 1 << 30) for c in g.consumers))


def prune(model: nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor, config: StructuredConfig | None = None,
          calib: Any = None, *, loss_fn: Callable[[Any], torch.Tensor] | None = None,
          progress: Callable[[str], None] | None = None) -> nn.Module:
    """Structured pruning with compensation; returns a physically smaller deep copy of `model`.

    example_inputs: positional inputs for tracing. calib: anything edgeprune.data.as_data takes (tensor, tuple
    of tensors, list of input tuples, DataLoader, path, CalibrationData; default: example_inputs); the first
    config.n_calib samples are used. loss_fn(output) -> scalar
    is needed for importance="taylor".
    """
    config = config or StructuredConfig()
    if not isinstance(config, StructuredConfig):
        raise ConfigError(f"config must be a StructuredConfig, got {type(config).__name__}", hint="StructuredConfig(ratio=0.3)")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    from edgeprune.finite import check_finite_entry

    check_finite_entry(model, example_inputs, where="prune's model")
    if config.importance == "taylor" and loss_fn is None:
        raise ConfigError("importance='taylor' needs a loss", hint="pass loss_fn=lambda out: ... to prune()")
    model = copy.deepcopy(model).eval()

    def note(line: str) -> None:  # a part left whole (strict=False): said, not fatal
        log.info(line)
        if progress:
            progress(line)

    groups = find_groups(model, example_inputs, config, note)
    _check_per_layer(config, groups)
    batches = _calibration_chunks(calib, example_inputs, config.n_calib, model)
    static: dict[str, torch.Tensor] | None = None
    taylor_of = imp.taylor_products(model, batches, loss_fn) if config.importance == "taylor" else None
    if not imp.needs_stats(config.importance):
        static = {g.name: imp.score(g, config.importance, None, config.damp, taylor_of, config.seed) for g in groups}
    plan_scores = static
    if config.scope == "global" and static is None:
        stats = capture(model, {c.name: c.module for g in groups for c in g.consumers}, batches, config.max_rows, config.seed)
        plan_scores = {g.name: imp.score(g, config.importance, stats, config.damp) for g in groups}
        del stats
    removals = planned_removals(groups, config, plan_scores)
    mode = {True: "ls", False: None, "ls": "ls", "bias": "bias"}.get(config.compensate, "ls")
    for g in _order(model, groups, batches[0]):
        k = removals[g.name]
        if k == 0:
            continue
        if g.refresh is not None:
            g.refresh(g)
        need_stats = imp.needs_stats(config.importance) or mode is not None
        stats = capture(model, {c.name: c.module for c in g.consumers}, batches, config.max_rows, config.seed) if need_stats else None
        scores = static[g.name] if static is not None else imp.score(g, config.importance, stats, config.damp)
        idxs = choose_units(scores, k, g.uniform)
        if mode is not None:
            compensate(g, idxs, stats, config.damp, mode)
        g.remove(idxs)
        if progress:
            progress(f"{g.name}: removed {k} of {g.n_units} {g.kind}")
        log.info("%s: removed %d of %d %s", g.name, k, g.n_units, g.kind)
    _check_runs(model, example_inputs)
    return model


def _check_runs(model: nn.Module, example_inputs: tuple) -> None:
    """The pruned model still runs on the example inputs (a bare parameter pruned along the wrong dimension, or a
    custom layer Torch-Pruning mis-coupled, shows here as a shape error, not later in export)."""
    try:
        with torch.no_grad():
            model(*example_inputs)
    except Exception as err:
        raise PruningError(f"the pruned model fails on the example inputs: {type(err).__name__}: {str(err).splitlines()[0][:200]}",
                           hint="pass strict=True to see the first layer pruning cannot handle, then ignore= it") from err
