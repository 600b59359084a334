"""Which blocks pruning changed, and capturing their inputs/outputs with hooks.

A "block" is a child of a ModuleList/Sequential (a transformer layer, an MBConv or ResNet stage unit). Channel
and head pruning narrow what is *inside* a block; its output width stays, so the dense block's output is a
target the pruned block can be fitted to (docs/METHODS.md §9: block-local reconstruction, feature losses).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn


class StopForward(Exception):
    """Raised by a hook once it has what it needs: the rest of the forward pass is skipped."""


def first_tensor(out: Any) -> torch.Tensor:
    from edgeprune.metrics import first_tensor as first

    return first(out)


def is_pruned(teacher: nn.Module, student: nn.Module) -> bool:
    """Whether any parameter of `student` is narrower (or otherwise reshaped) than `teacher`'s of the same name."""
    t = dict(teacher.named_parameters())
    return any(n in t and t[n].shape != p.shape for n, p in student.named_parameters())


def find_blocks(teacher: nn.Module, student: nn.Module, example: tuple) -> list[str]:
    """Names of the pruned blocks, in forward order: the children of the ModuleList/Sequential holding the most
    pruned children whose output keeps the dense shape (nested Sequentials are searched too, e.g. EfficientNet's
    stages of blocks). A block whose own output channels were cut has no dense target to fit, so it is left out."""
    t_mods = dict(teacher.named_modules())
    best: list[str] = []
    for name, mod in student.named_modules():
        if not isinstance(mod, (nn.ModuleList, nn.Sequential)) or name not in t_mods:
            continue
        kids = [(f"{name}.{k}" if name else k, c) for k, c in mod.named_children()]
        pruned = [n for n, c in kids if n in t_mods and is_pruned(t_mods[n], c)]
        if len(pruned) > len(best):
            best = pruned
    if not best:
        return []
    with torch.no_grad(), capture_outputs(teacher, best) as t_out, capture_outputs(student, best) as s_out:
        teacher(*example)
        student(*example)
    return [n for n in best if n in t_out and n in s_out and t_out[n].shape == s_out[n].shape]


@contextlib.contextmanager
def capture_outputs(model: nn.Module, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """While open, `store[name]` holds the latest first-tensor output of each named module."""
    mods = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}
    handles = [mods[n].register_forward_hook(lambda m, a, o, n=n: store.__setitem__(n, first_tensor(o))) for n in names]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def block_io(model: nn.Module, name: str, batch: tuple, want: str) -> Any:
    """Run `model` on `batch` only as far as block `name`: want="input" -> (args, kwargs) it received,
    want="output" -> its first-tensor output. Skips the rest of the model."""
    mod = dict(model.named_modules())[name]
    got: dict[str, Any] = {}

    def pre(m, args, kwargs):
        got["v"] = (tuple(a.detach() if torch.is_tensor(a) else a for a in args),
                    {k: v.detach() if torch.is_tensor(v) else v for k, v in kwargs.items()})
        raise StopForward

    def post(m, args, kwargs, out):
        got["v"] = first_tensor(out).detach()
        raise StopForward

    handle = mod.register_forward_pre_hook(pre, with_kwargs=True) if want == "input" else \
        mod.register_forward_hook(post, with_kwargs=True)
    try:
        with torch.no_grad():
            model(*batch)
    except StopForward:
        pass
    finally:
        handle.remove()
    if "v" not in got:
        raise RuntimeError(f"block {name} did not run on this input")
    return got["v"]
