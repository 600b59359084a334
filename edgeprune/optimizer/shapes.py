"""GEMM shapes of every layer a pruning group touches, at any kept width.

One forward pass with hooks records each layer's real input/output shapes (so M = tokens or output
pixels comes from the model, not a guess). A group with n units removes, per unit, a fixed number of
output rows from each producer and input features from each consumer (Producer.rows / Consumer.units),
so at k kept units a layer's N (producer) or K (consumer) shrinks linearly. Depthwise convs are both:
their channel count (and groups) follow the group.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from edgeprune.measurement.latency import LayerShape
from edgeprune.pruning import transposed
from edgeprune.weights import is_hf_conv1d


@dataclasses.dataclass(frozen=True)
class LayerRecord:
    name: str
    shape: LayerShape  # dense
    n_per_unit: float = 0.0  # output features removed per removed unit (producer side)
    k_per_unit: float = 0.0  # input features removed per removed unit (consumer side)
    depthwise: bool = False



SEQ_KEY = "#seq"  # suffix of the entries that record (batch, sequence length) of a Linear's 3-D input


def record_shapes(model: nn.Module, modules: dict[str, nn.Module], example_inputs: tuple) -> dict[str, LayerShape]:
    """Dense LayerShape of every named module, from one forward pass (plus name+SEQ_KEY -> (batch, seq)
    for Linears fed (batch, seq, features), which the attention matmuls of a heads group need)."""
    seen: dict[str, Any] = {}

    def make_hook(name):
        def hook(mod, args, out):
            x = args[0]
            if isinstance(mod, nn.Conv2d):
                b, _, h, w = out.shape
                kh, kw = mod.kernel_size
                seen[name] = LayerShape(b * h * w, mod.in_channels * kh * kw // mod.groups, mod.out_channels, "conv",
                                        kh, mod.groups, h)
            elif transposed.is_transposed(mod) and mod.groups == 1:
                # a GEMM per input pixel: (pixels x C_in) @ (C_in x C_out*k), then col2im (not a MAC)
                seen[name] = LayerShape(x.numel() // mod.in_channels, mod.in_channels,
                                        mod.out_channels * transposed.kernel_numel(mod))
            elif isinstance(mod, nn.Linear):
                seen[name] = LayerShape(x.numel() // mod.in_features, mod.in_features, mod.out_features)
                if x.dim() == 3:
                    seen[name + SEQ_KEY] = (int(x.shape[0]), int(x.shape[1]))
            elif is_hf_conv1d(mod):
                k = mod.weight.shape[0]
                seen[name] = LayerShape(x.numel() // k, k, mod.nf)
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules.items()]
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


def group_layers(group, shapes: dict[str, LayerShape]) -> list[LayerRecord]:
    """The layers whose cost depends on this group's width, with the features each unit owns."""
    n = max(group.n_units, 1)
    recs: dict[str, LayerRecord] = {}
    for p in group.producers:
        if p.name in shapes:
            rows = sum(len(r) for r in p.rows) / n
            if transposed.is_transposed(p.module):  # each output channel is k columns of its GEMM
                rows *= transposed.kernel_numel(p.module)
            shape = shapes[p.name]
            # a depthwise conv can be a group's producer only (e.g. the last MBConv block): its groups
            # must shrink with its channels, or the timed graph is an invalid grouped conv
            dw = shape.kind == "conv" and 1 < shape.groups == shape.n
            recs[p.name] = LayerRecord(p.name, shape, n_per_unit=rows, depthwise=dw)
    for c in group.consumers:
        if c.name not in shapes:
            continue
        shape = shapes[c.name]
        feats = sum(len(u) for u in c.units) / n
        if shape.kind == "conv":
            if shape.groups > 1 and shape.groups == shape.n:  # depthwise: channels in == out == groups
                recs[c.name] = LayerRecord(c.name, shape, n_per_unit=feats, depthwise=True)
                continue
            feats *= shape.kernel * shape.kernel / shape.groups
        prev = recs.get(c.name)
        recs[c.name] = LayerRecord(c.name, shape, n_per_unit=prev.n_per_unit if prev else 0.0, k_per_unit=feats)
    if group.kind == "heads":
        recs.update(_attention_matmuls(group, shapes))
    return list(recs.values())


def _attention_matmuls(group, shapes: dict[str, Any]) -> dict[str, LayerRecord]:
    """Q.K^T and P.V of a heads group as GEMMs: their cost shrinks with every head removed, so they
    belong to the group's latency curve, not to the fixed remainder of the model.
    scores: b*h*s*s*d MACs = (b*s x d) @ (d x s*h); context: (b*s x s) @ (s x d*h)."""
    for p in group.producers:
        bs = shapes.get(p.name + SEQ_KEY)
        if bs is None:
            continue
        b, seq = bs
        d, h = group.unit_width, group.n_units
        return {p.name + "#scores": LayerRecord(p.name + "#scores", LayerShape(b * seq, d, seq * h), n_per_unit=seq),
                p.name + "#context": LayerRecord(p.name + "#context", LayerShape(b * seq, seq, d * h), n_per_unit=d)}
    return {}


def shapes_at(records: list[LayerRecord], removed_units: int) -> list[LayerShape]:
    out = []
    for r in records:
        s = r.shape
        if r.depthwise:
            c = max(1, int(round(s.n - r.n_per_unit * removed_units)))
            out.append(dataclasses.replace(s, n=c, groups=c))
            continue
        n = max(1, int(round(s.n - r.n_per_unit * removed_units)))
        k = max(1, int(round(s.k - r.k_per_unit * removed_units)))
        out.append(dataclasses.replace(s, n=n, k=k))
    return out


def group_latency_fn(records: list[LayerRecord], n_units: int, layer_s: Callable[..., float],
                     widths: list[int] | None = None) -> Callable[[int], float]:
    """seconds(k kept units) = sum of the group's layers at that width (memoised).

    With `widths` (the candidates), the curve is made monotone: a narrower layer never costs more than
    a wider one (it could be padded to it), so a noisy high reading at a small width is capped.
    """
    raw = lambda k: sum(layer_s(s, r.name) for r, s in zip(records, shapes_at(records, n_units - k)))  # noqa: E731
    cache: dict[int, float] = {}
    if widths:
        running = float("inf")
        for k in sorted(set(widths) | {n_units}, reverse=True):
            running = min(running, raw(k))
            cache[k] = running

    def fn(k: int) -> float:
        if k not in cache:
            cache[k] = raw(k)
        return cache[k]

    return fn
