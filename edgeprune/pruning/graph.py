"""Prunable groups: the units that must disappear together, who reads them, and how to remove them.

A Group has n_units units (a channel, a head, an FFN channel). Removing unit j deletes rows of the
*producers* (the layers that write the unit) and input columns of the *consumers* (the layers that
read it). Consumers are where importance is measured (ΔE on their output) and where compensation
refits the weights. CNN groups come from Torch-Pruning's DependencyGraph (residual adds, concat,
depthwise/grouped conv, BN/LN, flatten->Linear are all coupled by its tracer); transformer groups
(heads, FFN) come from hf.py, because head structure is a module attribute, not a traced shape.
"""
from __future__ import annotations

import math
from typing import Callable

from torch import nn

from edgeprune.errors import PruningError
from edgeprune.pruning import probe, rewire, transposed
from edgeprune.pruning.group import CONVS, Consumer, Group, Producer, is_depthwise

WEIGHTED = CONVS + (nn.Linear,)     # the layers a group is rooted at, read by, and written by
_SUPPORTED = WEIGHTED + (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.PReLU, nn.Identity, nn.Dropout)


def names_of(model: nn.Module) -> dict[nn.Module, str]:
    return {m: n for n, m in model.named_modules()}


def _param_leaves(model: nn.Module):
    for name, mod in model.named_modules():
        if any(True for _ in mod.parameters(recurse=False)):
            yield name, mod


def _bare(mod: nn.Module) -> bool:
    """A user module (not a torch.nn layer) whose own parameters are bare nn.Parameters: class tokens, position
    embeddings, layer scales. Torch-Pruning prunes those along their last non-singleton dimension."""
    return not type(mod).__module__.startswith("torch.nn")


def unsupported_layers(model: nn.Module, ignored: Callable[[str], bool]) -> list[tuple[str, nn.Module]]:
    """Layers with weights that structured channel pruning cannot prune correctly (and the user did not ignore)."""
    return [(name, mod) for name, mod in _param_leaves(model)
            if not isinstance(mod, _SUPPORTED) and not _bare(mod) and not ignored(name)]


def check_supported(model: nn.Module, ignored: Callable[[str], bool], strict: bool = True,
                    note: Callable[[str], None] = lambda line: None) -> Callable[[str], bool]:
    """Strict: every layer with weights must be one we can prune correctly, or be ignored by the user. Otherwise
    each one is left whole (`note` gets a 'left unpruned' line); returns `ignored` extended by them."""
    reason = "not supported by structured channel pruning"
    bad = [(name, mod, reason) for name, mod in unsupported_layers(model, ignored)]
    bad += [(n, m, why) for n, m, why in transposed.left_whole(model) if not ignored(n)]
    if bad and strict:
        name, mod, why = bad[0]
        what = f"layer '{name}' ({type(mod).__name__})"
        raise PruningError(f"{what} is {reason}" if why == reason else f"{what} cannot be pruned: {why}",
                           hint=f"add it to ignore=, e.g. ignore=['{name}'] (groups touching it are then left unpruned)")
    for name, mod, why in bad:
        note(f"left unpruned: {name} ({type(mod).__name__}): {why}; the channel groups that touch it keep their width")
    whole = {name for name, _, _ in bad}
    return lambda n: ignored(n) or n in whole


def channel_groups(model: nn.Module, example_inputs: tuple, ignored: Callable[[str], bool], strict: bool = True,
                   note: Callable[[str], None] = lambda line: None) -> list[Group]:
    """Channel groups of a CNN/MLP from Torch-Pruning's dependency graph.

    A group is kept only if some Conv/Linear reads it (otherwise its channels are model outputs), no ignored or
    unsupported layer is part of it, removing part of it leaves a model that still runs (`breaking_groups`), and
    a group passing a channel permutation is wired as the dense model is (`rewire.rewired_groups`). A group that
    fails one of these because its channels pass a chunk/split or a shuffle is rebuilt by probe.py, which measures
    where each channel goes; only if that fails too is it left whole.
    """
    ignored = check_supported(model, ignored, strict, note)
    split: dict[str, list[tuple[str, str]]] = {}
    groups = _tp_groups(model, example_inputs, ignored, split)
    kinds = {n: type(m).__name__ for n, m in model.named_modules()}
    bad = {name: "its channels are split (chunk/split) between consumers, and Torch-Pruning maps the chunks to "
                 "the wrong readers" for name in split}
    breaking = breaking_groups(model, example_inputs, ignored, [g.name for g in groups])
    bad.update({name: f"removing its channels breaks the forward pass ({why})" for name, why in breaking.items()})
    bad.update(rewire.rewired_groups(model, example_inputs, [g for g in groups if g.name not in bad],
                                     lambda m: _tp_groups(m, example_inputs, ignored)))
    members = {**{g.name: g.members for g in groups}, **split}
    kept = [g for g in groups if g.name not in bad]
    for name, why in bad.items():
        try:
            kept.append(probe.probed_group(model, example_inputs, members[name]))
            continue
        except probe.ProbeFailed as err:
            why = f"{why}; measuring where its channels go did not help: {err}"
        if strict:
            raise PruningError(f"channel group '{name}' ({kinds.get(name, '?')}) cannot be pruned: {why}",
                               hint=f"add it to ignore=, e.g. ignore=['{name}']")
        note(f"left unpruned: {name} ({kinds.get(name, '?')}): {why}")
    return kept


def breaking_groups(model: nn.Module, example_inputs: tuple, ignored, names: list[str]) -> dict[str, str]:
    """{group name: error} of the groups whose partial removal breaks the forward pass.

    Why probe: Torch-Pruning's graph can mis-couple channels it traced (YOLO's C2f, whose chunk() halves feed a
    residual add; some segmentation heads), and then the pruned model fails with a shape error. Each group loses
    half its units (uniform slots) on a copy, in turn, and the copy runs the example inputs; a break marks that
    group and costs a fresh copy for the rest. One dependency-graph build plus one per bad group.
    """
    import copy

    import torch

    bad, pending = {}, list(names)
    while pending:
        trial = copy.deepcopy(model)
        groups = {g.name: g for g in _tp_groups(trial, example_inputs, ignored)}
        while pending:
            g = groups.get(pending.pop(0))
            units = g.half_units() if g is not None else []
            if not units:
                continue
            try:
                if g.refresh is not None:
                    g.refresh(g)
                g.remove(units)
                with torch.no_grad():
                    trial(*example_inputs)
            except Exception as err:  # any failure of the probe is this group's
                bad[g.name] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}" if str(err) else type(err).__name__
                break
    return bad


def _tp_groups(model: nn.Module, example_inputs: tuple, ignored: Callable[[str], bool],
               split: dict[str, list[tuple[str, str]]] | None = None) -> list[Group]:
    """Groups of Torch-Pruning's dependency graph, bound to `model`'s modules. `split` collects (root -> members)
    the groups dropped because their channels are split (chunk/split) between consumers: Torch-Pruning 1.6.1 gives each chunk's
    reader local indices, and maps them to the wrong chunk (tests' ChunkNet, `u, v = relu(a(x)).chunk(2, 1)`:
    get_pruning_group(a, idxs=[0]) removes input 0 of b2, which reads v, where a's channel 0 is u's and b1's), so
    neither its scores nor its removal can be trusted."""
    import torch_pruning as tp

    names = names_of(model)
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=list(example_inputs), verbose=False,
                                                   customized_pruners=transposed.customized_pruners(model))
    except Exception as err:  # tracing failures of arbitrary user models
        raise PruningError(f"tracing the model's channel dependencies failed: {type(err).__name__}: {err}",
                           hint="use ignore= for the failing part, or unit='heads'/'ffn' for transformers") from err
    groups = []
    for tp_group in dg.get_all_groups(root_module_types=WEIGHTED):
        root_dep = tp_group[0].dep
        root, handler = root_dep.target.module, root_dep.handler
        n = len(tp_group[0].idxs)
        consumers, producers, uniform, skip = _parts(dg, tp_group, names, ignored)
        members = [(names[it.dep.target.module], "in" if dg.is_in_channel_pruning_fn(it.dep.handler) else "out")
                   for it in tp_group.items if it.dep.target.module in names]
        if not skip and not consumers and split is not None and _read_in_parts(dg, tp_group, n):
            split[names[root]] = members
        if skip or not consumers or n % uniform:
            continue

        def remove(idxs, root=root, handler=handler, dg=dg):
            dg.get_pruning_group(root, handler, idxs=sorted(int(i) for i in idxs)).prune()

        def refresh(group, root=root, handler=handler, dg=dg, n=n):
            # other groups' removals shift concat offsets: re-read this group's index mapping now
            group.consumers, group.producers, _, _ = _parts(dg, dg.get_pruning_group(root, handler, list(range(n))),
                                                            names_of(model), ignored)

        groups.append(Group(names[root], "channels", n, 1, consumers, producers, remove, uniform, refresh,
                            rewire.reorders(tp_group), members))
    return groups


def _read_in_parts(dg, tp_group, n: int) -> bool:
    """True when a Conv/Linear reads only part of the group's units (its channels were split or chunked)."""
    return any(isinstance(item.dep.target.module, WEIGHTED) and dg.is_in_channel_pruning_fn(item.dep.handler)
               and len(item.idxs) % n for item in tp_group.items)


def _parts(dg, tp_group, names, ignored):
    """(consumers, producers, uniform, skip) of a Torch-Pruning group, unit j = the root's channel j."""
    n = len(tp_group[0].idxs)
    consumers, producers, uniform = [], [], 1
    for item in tp_group.items:
        mod, idxs = item.dep.target.module, [int(i) for i in item.idxs]
        name = names.get(mod)
        if name is None:            # Torch-Pruning's pseudo-ops (add, cat, flatten): no weights
            continue
        if ignored(name) or not isinstance(mod, _SUPPORTED):
            return consumers, producers, uniform, True
        if isinstance(mod, CONVS) and 1 < mod.groups and not is_depthwise(mod):
            uniform = math.lcm(uniform, mod.groups)
        if not isinstance(mod, WEIGHTED) or len(idxs) % n:
            continue
        r = len(idxs) // n          # >1 when a flatten maps one channel to H*W features
        per_unit = [idxs[j * r:(j + 1) * r] for j in range(n)]
        if dg.is_in_channel_pruning_fn(item.dep.handler) and not is_depthwise(mod):
            consumers.append(Consumer(name, mod, per_unit))
        elif dg.is_out_channel_pruning_fn(item.dep.handler):
            producers.append(Producer(name, mod, per_unit))
    return consumers, producers, uniform, False
