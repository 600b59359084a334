"""Channel groups rebuilt from where the channels really go: a NaN probe through the forward pass.

Why this exists: Torch-Pruning 1.6 maps the channels of a group that passes a chunk/split or a channel shuffle
wrongly, and can miss a chunk's readers (graph.py, rewire.py say how). Here every member and index is measured: channel j of the root layer's output is set to NaN, and the NaN is looked for at each
member's input. One forward per bit and per polarity tells every input channel which root channel feeds it
(2 * ceil(log2 n) forwards for n channels), and a channel fed by two root channels shows up as both polarities of
some bit and is refused. Other producers of the group (a residual branch added back into a chunk) are probed the
same way from their own outputs. Every channel-mixing layer's output is NaN-cleaned, so that NaN stays in the
group's channel space. Cost: only groups that Torch-Pruning gets wrong are probed; each one takes a few dozen
forwards of the example inputs.

Removing channels changes what chunk() and shuffle reshapes compute from the width (the chunk boundary, the
shuffle's c/g), so units are removed as the same local slots in `uniform` equal blocks. The smallest uniform that
gives exactly the dense model with those channels masked (rewire.masked_outputs), on two removal patterns, is
kept; if none does, the group stays whole with the reason. docs/METHODS.md §10 ("Measured groups") says it in prose.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn

from edgeprune.outputs import flatten_outputs
from edgeprune.pruning import rewire
from edgeprune.pruning.group import Consumer, Group, Producer, is_depthwise

LINEARS = (nn.Linear,)
CHANNELWISE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.PReLU)


class ProbeFailed(Exception):
    """The group's channels cannot be mapped or removed consistently; the message is the one-line reason."""


def _width(mod: nn.Module) -> int:
    return mod.out_features if isinstance(mod, LINEARS) else mod.out_channels


def _channels(mod: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """(C, rest) view of t with the channel dim of `mod` first: last dim for Linear, dim 1 otherwise."""
    d = t.dim() - 1 if isinstance(mod, LINEARS) or t.dim() == 1 else 1
    return t.movedim(d, 0).reshape(t.shape[d], -1)


def _channelwise(mod: nn.Module) -> bool:
    """Layers that keep channel j at index j (NaN in channel j stays there)."""
    return isinstance(mod, CHANNELWISE) or (isinstance(mod, nn.Conv1d | nn.Conv2d) and is_depthwise(mod))


def _kind(name: str, mod: nn.Module) -> str:
    """How a layer that reads the group's channels is pruned: "dw", "norm" (per-channel parameters) or "in"."""
    if isinstance(mod, nn.Conv1d | nn.Conv2d) and is_depthwise(mod):
        return "dw"
    if isinstance(mod, CHANNELWISE):
        return "norm"
    if isinstance(mod, nn.Conv1d | nn.Conv2d | nn.Linear) and not getattr(mod, "transposed", False):
        return "in"
    raise ProbeFailed(f"'{name}' ({type(mod).__name__}) reads its channels and is not probed "
                      "(Conv1d/2d, Linear, BatchNorm, PReLU are)")


def _nan_masks(model: nn.Module, inputs: tuple, mods: dict[str, nn.Module], readers: list[str], source: str,
               cleaners: list[str], channels: list[list[int]]) -> list[dict[str, torch.Tensor]]:
    """Per forward f: {reader: bool (C,) of its input channels that carried NaN} with `source`'s output channels
    channels[f] set to NaN. Cleaners' outputs are NaN-free (their mixing is not the group's channel space)."""
    state: dict[str, torch.Tensor] = {}
    hooks = []

    def clean_then_inject(name):
        def hook(mod, args, out):
            out = torch.nan_to_num(out, nan=0.0) if name in cleaners else out
            if name == source:
                out = out.clone()
                view = out.movedim(-1 if isinstance(mod, LINEARS) else 1, 0)
                view[state["idx"]] = float("nan")
            return out
        return hook

    def read(name):
        def hook(mod, args):
            if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point() and args[0].dim():
                state[name] = _channels(mod, args[0].detach()).isnan().any(1)
        return hook

    for name in set(cleaners) | {source}:
        hooks.append(mods[name].register_forward_hook(clean_then_inject(name)))
    hooks += [mods[name].register_forward_pre_hook(read(name)) for name in readers]
    masks = []
    try:
        with torch.no_grad():
            for idx in channels:
                state.clear()
                state["idx"] = torch.tensor(idx, dtype=torch.long)
                model(*inputs)
                masks.append({r: state[r] for r in readers if r in state})
    except Exception as err:  # a model whose forward cannot carry NaN (value-dependent control flow)
        raise ProbeFailed(f"the NaN probe failed: {type(err).__name__}: {str(err).splitlines()[0][:100]}") from err
    finally:
        for h in hooks:
            h.remove()
    return masks


def _decode(model, inputs, mods, readers, source, cleaners, n: int) -> dict[str, torch.Tensor]:
    """{reader: long (C,)}: the `source` channel feeding each input channel, -1 where none does."""
    bits = max(1, math.ceil(math.log2(n)))
    pattern = [[j for j in range(n) if (j >> b & 1) == pol] for b in range(bits) for pol in (1, 0)]
    masks = _nan_masks(model, inputs, mods, readers, source, cleaners, pattern)
    out = {}
    for r in readers:
        if any(r not in m for m in masks):
            continue                            # not reached in this forward (another branch)
        ones = torch.stack([masks[2 * b][r] for b in range(bits)])        # (bits, C)
        zeros = torch.stack([masks[2 * b + 1][r] for b in range(bits)])
        hit = ones | zeros
        if (ones & zeros).any() or ((hit.any(0)) & ~hit.all(0)).any():
            raise ProbeFailed(f"input channels of '{r}' mix several channels of '{source}'")
        code = (ones.long() << torch.arange(bits).unsqueeze(1)).sum(0)
        out[r] = torch.where(hit.all(0), code, torch.full_like(code, -1))
    return out


def _plan(model, inputs, root: str, members: list[tuple[str, str]]) -> dict:
    """{name: (kind, per-unit input indices[, per-unit output rows])} of every layer in the channel space of `root`'s
    outputs, measured on `model` as it is now. The readers are found by the probe, not taken from `members`
    (Torch-Pruning misses a chunk's readers); its producers are tried as writers of the space too."""
    mods = dict(model.named_modules())
    params = [m for m, mod in mods.items() if m and any(True for _ in mod.parameters(recurse=False))]
    cleaners = [m for m in params if not _channelwise(mods[m])]
    n = _width(mods[root])
    at = {r: codes for r, codes in _decode(model, inputs, mods, [m for m in params if m != root], root, cleaners,
                                             n).items() if (codes >= 0).any()}
    plan = {root: ("dw" if _kind(root, mods[root]) == "dw" else "out", [[j] for j in range(n)])}
    for name, codes in at.items():
        per: list[list[int]] = [[] for _ in range(n)]
        for c, j in enumerate(codes.tolist()):
            if j >= 0:
                per[j].append(c)
        plan[name] = (_kind(name, mods[name]), per)
    writers = [m for m, role in members if role == "out" and m != root] + [m for m in at if plan[m][0] == "in"]
    for name in dict.fromkeys(writers):
        found = _producer_rows(model, inputs, mods, name, at, params, cleaners, n)
        if found is not None:
            rows, private = found
            kind, per = plan.get(name, ("", [[] for _ in range(n)]))
            plan[name] = ("in+out" if kind == "in" else "out", per, rows)
            plan.update({m: (_kind(m, mods[m]), p) for m, p in private.items()})
    if not any("in" in v[0] for v in plan.values()):
        raise ProbeFailed(f"no layer reads the channels of '{root}'")
    return plan


def _producer_rows(model, inputs, mods, name, at, params, cleaners, n):
    """(rows, private) for a layer `name` whose outputs land in the group's channels: rows[j] its output rows that
    land where root unit j does, and private {layer: per-unit channels} of the channel-wise layers on its way
    there (a residual branch's BatchNorm). None when its outputs land outside the group (a pure consumer)."""
    width = _width(mods[name])
    seen = _decode(model, inputs, mods, [r for r in params if r != name], name, cleaners, width)
    unit = {}
    for k in range(width):
        units = {int(at[r][c]) for r, codes in seen.items() if r in at for c in (codes == k).nonzero().flatten().tolist()}
        units.discard(-1)
        if len(units) > 1:
            raise ProbeFailed(f"output channel {k} of '{name}' lands on several channels of the group")
        if units:
            unit[k] = units.pop()
    if not unit:
        return None
    if len(unit) != width:
        raise ProbeFailed(f"'{name}' writes only part of its outputs into the group's channels")
    rows: list[list[int]] = [[] for _ in range(n)]
    for k, j in unit.items():
        rows[j].append(k)
    private = {}
    for r, codes in seen.items():
        if r not in at and _channelwise(mods[r]) and (codes >= 0).any():
            private[r] = [[] for _ in range(n)]
            for c, k in enumerate(codes.tolist()):
                if k >= 0:
                    private[r][unit[k]].append(c)
    return rows, private


def _remove(mods: dict[str, nn.Module], plan: dict, units: list[int]) -> None:
    """Delete `units` from every member of the plan (indices computed before any layer shrinks)."""
    import torch_pruning as tp

    gone = set(units)
    for name, (kind, per, *rows) in plan.items():
        mod = mods[name]
        cols = sorted(c for j in gone for c in per[j])
        lin = isinstance(mod, LINEARS)
        if kind == "dw" and cols:
            tp.prune_depthwise_conv_out_channels(mod, cols)
        elif kind == "norm" and cols:
            (tp.prune_prelu_out_channels if isinstance(mod, nn.PReLU) else tp.prune_batchnorm_out_channels)(mod, cols)
        if "in" in kind and cols:
            (tp.prune_linear_in_channels if lin else tp.prune_conv_in_channels)(mod, cols)
        out_rows = sorted(r for j in gone for r in (rows[0][j] if rows else per[j])) if "out" in kind else []
        if out_rows:
            (tp.prune_linear_out_channels if lin else tp.prune_conv_out_channels)(mod, out_rows)


def _bind(model: nn.Module, plan: dict, n: int, uniform: int, root: str) -> Group:
    mods = dict(model.named_modules())
    consumers = [Consumer(name, mods[name], per) for name, (kind, per, *_) in plan.items()
                 if "in" in kind and any(per)]
    producers = [Producer(name, mods[name], rows[0] if rows else per) for name, (kind, per, *rows) in plan.items()
                 if "out" in kind]
    return Group(root, "channels", n, 1, consumers, producers, lambda units: _remove(mods, plan, units), uniform)


def _patterns(n: int, uniform: int) -> list[list[int]]:
    """Two removals of half the units, the same local slots in each block: the first half, and every other one."""
    per = n // uniform
    return [[b * per + j for b in range(uniform) for j in slots]
            for slots in (range(per // 2), range(1, per, 2))]


def _matches(model: nn.Module, inputs: tuple, plan: dict, n: int, uniform: int, root: str, atol: float = 1e-4) -> bool:
    """Removing units (no compensation) gives the dense model with them masked at every consumer's input."""
    for units in _patterns(n, uniform):
        want = rewire.masked_outputs(model, inputs, _bind(model, plan, n, uniform, root), units)
        trial = copy.deepcopy(model)
        try:
            _bind(trial, plan, n, uniform, root).remove(units)
            with torch.no_grad():
                got = flatten_outputs(trial(*inputs))
        except Exception:  # the removal breaks a layer or the forward: this blocking is wrong
            return False
        diff = rewire.diff_from_masked(got, want)
        if diff is None or diff[0] > atol * diff[1]:
            return False
    return True


def _roots(model: nn.Module, members: list[tuple[str, str]]) -> list[str]:
    """Producers that may define the units, widest first, depthwise convs last: the root must write every unit
    (a residual branch added into one chunk writes only that chunk's)."""
    mods = dict(model.named_modules())
    outs = {name for name, role in members if role == "out" and isinstance(mods[name], nn.Conv1d | nn.Conv2d | nn.Linear)}
    return sorted(outs, key=lambda m: (not isinstance(mods[m], LINEARS) and is_depthwise(mods[m]), -_width(mods[m]), m))


def probed_group(model: nn.Module, inputs: tuple, members: list[tuple[str, str]]) -> Group:
    """A group Torch-Pruning got wrong, named now by the layer that writes all its units, its indices measured by the NaN probe and its uniform
    blocking chosen by the masking check. `members`: (module name, "in" | "out") as Torch-Pruning lists them.
    Raises ProbeFailed with the reason when no root and blocking remove the channels faithfully."""
    reasons = []
    for root in _roots(model, members)[:3]:
        try:
            plan = _plan(model, inputs, root, members)
        except ProbeFailed as err:
            reasons.append(str(err))
            continue
        n = len(plan[root][1])
        for uniform in (u for u in range(1, n // 2 + 1) if n % u == 0):
            if _matches(model, inputs, plan, n, uniform, root):
                group = _bind(model, plan, n, uniform, root)
                group.refresh = _refresher(model, inputs, root, members, uniform)
                return group
        reasons.append(f"no removal of equal blocks of '{root}'s channels gives the dense model with them masked")
    raise ProbeFailed("; ".join(reasons) or "no Conv/Linear writes the group")


def _refresher(model, inputs, root, members, uniform) -> Callable[[Group], None]:
    def refresh(group: Group) -> None:
        # other groups' removals shift this group's indices (concat offsets): measure them again
        fresh = _bind(model, _plan(model, inputs, root, members), group.n_units, uniform, root)
        if fresh.n_units != group.n_units:
            raise ProbeFailed(f"'{root}' changed width before its group was pruned")
        group.consumers, group.producers, group.remove = fresh.consumers, fresh.producers, fresh.remove
    return refresh
