"""In-context layer times: the runtime's own per-node profiler on the whole model, mapped to torch layers.

Why: a conv timed alone pays what it does not pay inside the model. On a CPU the runtime keeps
activations in a blocked layout (OpenVINO nChw8c/16c, ORT NCHWc) between convs, so the standalone
graph adds a reorder of its input and output, and it misses fusion with its neighbours. On
OpenVINO/EfficientNet-Lite0 (this repo's 2-core AVX2 machine) the standalone table over-states the
early high-resolution layers 3-4x and the late 7x7 ones only 1.3x. The planner then cuts the layers
that look expensive alone, and its plans ran 20-25% slower than predicted (benchmarks/results/optimize.md,
before this module). Profiling the dense model and the anchors (already exported and timed) gives
each conv's in-context time at three widths; the table is then rescaled per layer:

    cost(layer l, shape s) = table(s) * rho_l(MACs(s)),  rho_l = in-context / standalone at the anchors,

interpolated linearly in MACs between the anchors (clamped outside). Linear layers keep the
standalone table: a row-major MatMul has no layout to convert, and MiniLM's predictions were
already within 7% on both runtimes.

The mapping ONNX node -> torch layer walks both in execution order and pairs them by weight shape;
a runtime reports a node under its ONNX name (OpenVINO, + "/WithoutBiases") or under the output
name of the last op fused into it (ONNX Runtime, + "_nchwc"). A layer that cannot be mapped takes
the median rho of the layers that can (so the table stays consistent); if none can, no correction.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from edgeprune.measurement.latency import LayerShape

# ops that runtimes fuse into the preceding conv: a fused node is reported under the last one's output
_FUSABLE = {"Clip", "Relu", "Add", "Sigmoid", "Mul", "HardSigmoid", "HardSwish", "LeakyRelu", "BatchNormalization"}


def weighted_nodes(onnx_path: str | Path) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    """Every Conv node with a constant weight, in graph order: (names a runtime may report it under, weight shape)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    inits = {i.name: tuple(i.dims) for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out = []
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        names, tail = [node.name, node.output[0]], node
        # follow single-consumer elementwise successors: ORT names the fused node after the last one
        while len(consumers.get(tail.output[0], [])) == 1 and consumers[tail.output[0]][0].op_type in _FUSABLE:
            tail = consumers[tail.output[0]][0]
            names.append(tail.output[0])
        out.append((tuple(names), inits[node.input[1]]))
    return out


def conv_order(model: torch.nn.Module, example_inputs: tuple) -> list[tuple[str, tuple[int, ...]]]:
    """(module name, weight shape) of every Conv2d in forward-call order (record_shapes fills its dict in call order)."""
    from edgeprune.optimizer.shapes import record_shapes

    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    return [(n, tuple(convs[n].weight.shape)) for n in record_shapes(model, convs, example_inputs) if n in convs]


def map_nodes(layers: list[tuple[str, tuple[int, ...]]], nodes: list[tuple[tuple[str, ...], tuple[int, ...]]]) -> dict[str, str]:
    """runtime-reported name -> layer name, pairing layers and nodes in order by weight shape ({} if they diverge)."""
    mapping: dict[str, str] = {}
    j = 0
    for name, shape in layers:
        while j < len(nodes) and nodes[j][1] != shape:
            j += 1
        if j == len(nodes):
            return {}
        for reported in nodes[j][0]:
            mapping[reported] = name
        j += 1
    return mapping


def _normalise(reported: str) -> str:
    base = reported.split("/")[0]
    return base[: -len("_nchwc")] if base.endswith("_nchwc") else base


def profile_layers(session, feeds: Mapping[str, np.ndarray], mapping: dict[str, str], runs: int = 20) -> tuple[dict[str, float], float]:
    """(seconds per mapped layer, seconds of all nodes) from the runtime's per-node profiler."""
    per: dict[str, float] = {}
    total = 0.0
    for info in session.inspect(dict(feeds), runs=runs):
        ms = float(info.time_ms or 0.0)
        total += ms
        layer = mapping.get(_normalise(info.name)) or mapping.get(info.name)
        if layer is not None:
            per[layer] = per.get(layer, 0.0) + ms / 1e3
    return per, total / 1e3


@dataclasses.dataclass
class ContextCorrection:
    """rho per conv layer at a few MACs (from the anchors); `default` for convs that could not be mapped."""

    points: dict[str, list[tuple[float, float]]]
    default: float

    def rho(self, name: str | None, shape: LayerShape) -> float:
        if shape.kind != "conv":
            return 1.0
        pts = sorted(self.points.get(name or "", ()))
        if not pts:
            return self.default
        macs, rhos = zip(*pts)
        return float(np.interp(shape.macs, macs, rhos))

    def apply(self, layer_s: Callable[..., float]) -> Callable[..., float]:
        return lambda s, name=None: self.rho(name, s) * layer_s(s, name)

    def summary(self) -> dict[str, Any]:
        dense = [max(p)[1] for p in self.points.values() if p]
        return {"layers": len(self.points), "rho_median": float(np.median(dense)) if dense else None,
                "rho_min": float(min(dense)) if dense else None, "rho_max": float(max(dense)) if dense else None}


def context_correction(model, example_inputs, anchors: list[tuple[Path, dict[str, LayerShape]]], sessions, feeds,
                       measured_s: list[float], layer_s: Callable[..., float], runs: int = 20) -> ContextCorrection | None:
    """Profile each anchor (its ONNX file, its conv shapes by layer name, its compiled session) and fit rho per conv.

    Each anchor's profile is scaled so its node total equals the anchor's interleaved p50 (`measured_s`):
    the profiler's absolute times drift with the machine, the shares within one run do not.
    """
    if not hasattr(sessions[0], "inspect"):
        return None
    layers = conv_order(model, example_inputs)
    if not layers:
        return None
    points: dict[str, list[tuple[float, float]]] = {}
    for (path, shapes), sess, wall in zip(anchors, sessions, measured_s):
        mapping = map_nodes(conv_order_of(shapes, layers), weighted_nodes(path))
        if not mapping:
            continue
        per, total = profile_layers(sess, feeds, mapping, runs)
        scale = wall / total if total > 0 else 1.0
        for name, secs in per.items():
            s = shapes.get(name)
            if s is not None and secs > 0:
                points.setdefault(name, []).append((float(s.macs), scale * secs / layer_s(s, name)))
    if not points:
        return None
    return ContextCorrection(points, float(np.median([r for p in points.values() for _, r in p])))


def conv_order_of(shapes: dict[str, LayerShape], dense_layers: list[tuple[str, tuple[int, ...]]]) -> list[tuple[str, tuple[int, ...]]]:
    """The dense forward order with each layer's weight shape at an anchor's widths (out, in/groups, kh, kw)."""
    out = []
    for name, dense_shape in dense_layers:
        s = shapes.get(name)
        if s is None:
            out.append((name, dense_shape))
            continue
        in_per_group = s.k // (s.kernel * s.kernel)
        out.append((name, (s.n, in_per_group, s.kernel, s.kernel)))
    return out
