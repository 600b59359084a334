"""Encoder fusion for ONNX Runtime's CPU kernels: multi-head attention -> com.microsoft.Attention, erf-GELU -> Gelu,
and LayerNormalization written out (ORT's own kernel is the slower one here; `unfuse_layernorm`).

Why not ORT's own fuser: onnxruntime.transformers optimize_model(model_type="bert") finds no Attention in
MiniLM-L6 as torch 2.13 exports it from transformers 5.x (the mask arrives as Where(And(...)) over a 4-D bool, not
the (1 - mask) * -10000 it looks for), so it fuses nothing that pays (measured 1.81x vs plain dynamic INT8's 1.89x).
The pattern edgeprune's own export writes is fixed and short, so it is matched here directly:

    x -> MatMul(Wq) -> Add(bq) -> Reshape(b, s, -1, d) -> Transpose(0, 2, 1, 3)          q: (b, h, s, d)
    x -> MatMul(Wk) -> Add(bk) -> Reshape -> Transpose(0, 2, 3, 1)                        k^T: (b, h, d, s)
    x -> MatMul(Wv) -> Add(bv) -> Reshape -> Transpose(0, 2, 1, 3)                        v: (b, h, s, d)
    MatMul(q, k^T) -> Mul(scale) -> Add(mask) -> Softmax -> MatMul(., v) -> Transpose -> Reshape(b, s, h*d)

torch's SDPA decomposition (transformers' default) writes the same with the scale split as sqrt(s) on q and on
k^T, k^T built by Reshape/Transpose/Reshape, and Where(IsNaN(p), 0, p) after the Softmax; both are matched. Either
becomes Attention(x, [Wq|Wk|Wv] (hidden, 3*hidden), [bq|bk|bv], Cast<int32>(attention_mask)) -> (b, s, h*d). ORT's
dynamic quantizer then turns it into QAttention: one int8 GEMM for Q, K and V, and the per-head attention in one
kernel instead of 4 Reshape/Transpose + 2 MatMul + Mul/Add/Softmax nodes. Measured on MiniLM-L6 (1x128, 2 threads,
interleaved rounds, this 2-core EPYC): dynamic INT8 2.08x -> 2.21x with attention fused, 2.33x with GELU too; FP32
with both 1.10x. On the SDPA export: 1.82x plain, 2.44x fused, 2.62x with LayerNorm written out (10-NN overlap on
500 held-out snippets 86.82 / 86.86 / 86.90).

Only the additive mask is replaced by the raw 2-D mask, so a graph whose mask is more than padding (a decoder's
causal mask) would change: `fuse_encoder` runs the fused graph against the original on ORT, with padded masks, and
keeps the original when any output moves beyond the export tolerance.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MS_DOMAIN = "com.microsoft"


class _Graph:
    """Producer / consumer / constant lookups over an onnx GraphProto (built once; the graph is rewritten after)."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def made_by(self, name: str, op: str):
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op else None

    def only_reader(self, name: str, op: str):
        readers = self.consumers.get(name, [])
        return readers[0] if len(readers) == 1 and readers[0].op_type == op else None

    def scalar(self, name: str, value: float) -> bool:
        v = self.values.get(name)
        return v is not None and v.size == 1 and abs(float(v.reshape(())) - value) < 1e-4


def _scaled(g: _Graph, name: str) -> tuple[str, float, list]:
    """(input, factor, [the Mul]) when `name` is a Mul by a constant scalar, else (name, 1.0, [])."""
    mul = g.made_by(name, "Mul")
    if mul is not None:
        for a, b in (mul.input, mul.input[::-1]):
            v = g.values.get(b)
            if v is not None and v.size == 1:
                return a, float(v.reshape(())), [mul]
    return name, 1.0, []


def _projection(g: _Graph, name: str, hops: int) -> dict[str, Any] | None:
    """Up to `hops` Reshape/Transpose nodes above `name`, then Reshape(b, s, -1, d) <- Add(bias) <- MatMul(x, W)
    with constant W, bias and shape; None otherwise. Which permutation the hops make is not read here: the fused
    graph is run against the original before it is kept (fuse_encoder)."""
    nodes, cur = [], g.producer.get(name)
    for _ in range(hops):
        if cur is None or cur.op_type not in ("Transpose", "Reshape"):
            return None
        nodes.append(cur)
        add = g.made_by(cur.input[0], "Add") if cur.op_type == "Reshape" else None
        mm = add and g.made_by(add.input[0], "MatMul")
        if mm:
            w, b, shape = g.values.get(mm.input[1]), g.values.get(add.input[1]), g.values.get(cur.input[1])
            if w is None or b is None or shape is None or w.ndim != 2 or b.shape != (w.shape[1],) or shape.size != 4:
                return None
            return {"x": mm.input[0], "w": w, "b": b, "head": int(shape[3]), "nodes": nodes + [add, mm]}
        cur = g.producer.get(cur.input[0])
    return None


def _weights_read(g: _Graph, softmax) -> tuple[Any, list]:
    """The MatMul that reads the probabilities, through SDPA's NaN guard Where(IsNaN(p), 0, p) when it is there."""
    av = g.only_reader(softmax.output[0], "MatMul")
    if av is not None:
        return av, []
    readers = g.consumers.get(softmax.output[0], [])
    isnan = next((n for n in readers if n.op_type == "IsNaN"), None)
    where = next((n for n in readers if n.op_type == "Where"), None)
    if len(readers) != 2 or isnan is None or where is None or where.input[0] != isnan.output[0]:
        return None, []
    return g.only_reader(where.output[0], "MatMul"), [isnan, where]


def _attention(g: _Graph, softmax) -> tuple[dict[str, Any], list] | None:
    """Multi-head attention around one Softmax, as eager attention or torch's SDPA decomposition exports it
    (module doc): (what the Attention node needs, the nodes it replaces)."""
    add = g.made_by(softmax.input[0], "Add")
    if add is None:
        return None
    scores, scale, scale_nodes = _scaled(g, add.input[0])  # eager: (q @ k^T) * s
    qk = g.made_by(scores, "MatMul")
    av, guard = _weights_read(g, softmax)
    tr = av and g.only_reader(av.output[0], "Transpose")
    rs = tr and g.only_reader(tr.output[0], "Reshape")
    if not (qk and rs) or av.input[1] == softmax.output[0]:
        return None
    q_in, q_scale, q_mul = _scaled(g, qk.input[0])  # SDPA: (q * sqrt s) @ (k^T * sqrt s)
    k_in, k_scale, k_mul = _scaled(g, qk.input[1])
    # q and v: Transpose <- Reshape; k: that, or SDPA's Reshape/Transpose/Reshape for k^T on top
    q, k, v = _projection(g, q_in, 2), _projection(g, k_in, 5), _projection(g, av.input[1], 2)
    if not (q and k and v) or not q["x"] == k["x"] == v["x"]:
        return None
    if not q["w"].shape == k["w"].shape == v["w"].shape or q["w"].shape[1] % q["head"]:
        return None
    spec = {"x": q["x"], "out": rs.output[0], "heads": q["w"].shape[1] // q["head"], "scale": scale * q_scale * k_scale,
            "w": np.concatenate([q["w"], k["w"], v["w"]], axis=1), "b": np.concatenate([q["b"], k["b"], v["b"]])}
    replaced = [add, qk, softmax, av, tr, *scale_nodes, *q_mul, *k_mul, *guard, *q["nodes"], *k["nodes"], *v["nodes"]]
    return spec, replaced + [rs]


def _gelu(g: _Graph, erf) -> tuple[str, str, list] | None:
    """x * (0.5 * (1 + erf(x / sqrt 2))) as torch exports it: (x, output, the five nodes)."""
    div = g.made_by(erf.input[0], "Div")
    if div is None or not g.scalar(div.input[1], 2 ** 0.5):
        return None
    one = g.only_reader(erf.output[0], "Add")
    half = one and g.only_reader(one.output[0], "Mul")
    last = half and g.only_reader(half.output[0], "Mul")
    if not last or not any(g.scalar(i, 1.0) for i in one.input):
        return None
    other = [i for i in half.input if i != one.output[0]]
    x = [i for i in last.input if i != half.output[0]]
    if len(other) != 1 or not g.scalar(other[0], 0.5) or x != [div.input[0]]:
        return None
    return x[0], last.output[0], [div, erf, one, half, last]


def _layernorm_ops(node, k: int, opset: int, eps_name: str) -> list:
    """LayerNormalization over the last axis as ReduceMean/Sub/Mul/ReduceMean/Add/Sqrt/Div/Mul/Add (module doc)."""
    from onnx import helper

    x, gamma, beta = node.input[0], node.input[1], node.input[2]
    p, y = f"ep_ln{k}_", node.output[0]

    def mean(src, out):  # opset 18 moved ReduceMean's axes from an attribute to an input
        if opset >= 18:
            return helper.make_node("ReduceMean", [src, "ep_ln_axes"], [out], name=out)
        return helper.make_node("ReduceMean", [src], [out], name=out, axes=[-1])

    return [mean(x, p + "mean"), helper.make_node("Sub", [x, p + "mean"], [p + "d"], name=p + "d"),
            helper.make_node("Mul", [p + "d", p + "d"], [p + "sq"], name=p + "sq"), mean(p + "sq", p + "var"),
            helper.make_node("Add", [p + "var", eps_name], [p + "ve"], name=p + "ve"),
            helper.make_node("Sqrt", [p + "ve"], [p + "sd"], name=p + "sd"),
            helper.make_node("Div", [p + "d", p + "sd"], [p + "n"], name=p + "n"),
            helper.make_node("Mul", [p + "n", gamma], [p + "g"], name=p + "g"),
            helper.make_node("Add", [p + "g", beta], [y], name=p + "y")]


def unfuse_layernorm(model) -> int:
    """Every last-axis LayerNormalization written out in elementwise ops and ReduceMean; returns how many.

    Why un-fuse: ONNX Runtime 1.32's CPU LayerNormalization (and the SkipLayerNormalization it fuses into) took
    126 us for a 128x384 tensor on 2 threads here, the written-out form 78 us (MLAS-vectorised reductions; ORT does
    not fuse it back), same output within 4e-6. On MiniLM-L6's dynamic INT8 (13 LayerNorms): 2.44x -> 2.62x (module doc)."""
    from onnx import numpy_helper

    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    nodes, k = [], 0
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx") or axis != -1 or len(node.input) < 3:
            nodes.append(node)
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        graph.initializer.append(numpy_helper.from_array(np.array(eps, np.float32), f"ep_ln{k}_eps"))
        nodes.extend(_layernorm_ops(node, k, opset, f"ep_ln{k}_eps"))
        k += 1
    if k and opset >= 18:
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "ep_ln_axes"))
    del graph.node[:]
    graph.node.extend(nodes)
    return k


def _mask_input(graph) -> str | None:
    """The 2-D integer graph input that holds the padding mask (named *mask*), if there is one."""
    for inp in graph.input:
        dims = inp.type.tensor_type.shape.dim
        if "mask" in inp.name.lower() and inp.type.tensor_type.elem_type in (6, 7, 9) and len(dims) == 2:
            return inp.name
    return None


def _drop_dead(graph) -> None:
    """Keep the nodes an output depends on, and the initializers they read (the old mask chain goes)."""
    needed, keep = {o.name for o in graph.output}, []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    live = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(live)


def fuse(model) -> dict[str, int]:
    """Rewrite an onnx ModelProto in place (module doc); returns how many of each were fused."""
    from onnx import TensorProto, helper, numpy_helper

    g, graph = _Graph(model.graph), model.graph
    mask = _mask_input(graph)
    replace: dict[int, Any] = {}  # id(last node of a pattern) -> its fused node
    dead: set[int] = set()
    softmaxes = [n for n in graph.node if n.op_type == "Softmax"] if mask is not None else []  # no mask: no Attention
    for i, softmax in enumerate(softmaxes):
        found = _attention(g, softmax)
        if found is None:
            continue
        spec, nodes = found
        w, b = f"ep_attention_{i}_qkv_weight", f"ep_attention_{i}_qkv_bias"
        graph.initializer.extend([numpy_helper.from_array(spec["w"].astype(np.float32), w),
                                  numpy_helper.from_array(spec["b"].astype(np.float32), b)])
        replace[id(nodes[-1])] = helper.make_node("Attention", [spec["x"], w, b, "ep_mask_index"], [spec["out"]],
                                                 name=f"ep_attention_{i}", domain=MS_DOMAIN, num_heads=spec["heads"],
                                                 scale=spec["scale"])
        dead.update(id(n) for n in nodes[:-1])
    n_attention = len(replace)
    for i, erf in enumerate(n for n in graph.node if n.op_type == "Erf"):
        found = _gelu(g, erf)
        if found is not None:
            x, out, nodes = found
            replace[id(nodes[-1])] = helper.make_node("Gelu", [x], [out], name=f"ep_gelu_{i}", domain=MS_DOMAIN)
            dead.update(id(n) for n in nodes[:-1])
    nodes = [replace.get(id(n), n) for n in graph.node if id(n) not in dead]
    if n_attention:  # the raw 0/1 mask as Attention's mask_index (batch, seq), int32
        nodes.insert(0, helper.make_node("Cast", [mask], ["ep_mask_index"], name="ep_mask_cast", to=TensorProto.INT32))
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_dead(graph)
    if replace and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    counts = {"attention": n_attention, "gelu": len(replace) - n_attention}
    counts["layernorm"] = unfuse_layernorm(model) if n_attention else 0  # only where it is an encoder we fused
    return counts


def _feeds(path: Path) -> dict[str, np.ndarray]:
    """Deterministic feeds for the check: random ids in the tables' range, masks padded on the last quarter."""
    from edgeprune.data import onnx_input_specs
    from edgeprune.exporter import within_tables

    rng, feeds = np.random.default_rng(0), {}
    for spec in onnx_input_specs(path):  # graph inputs, initializers excluded; free dims are None or a name
        shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else 16) for i, d in enumerate(spec.shape)]
        dtype = np.dtype(spec.dtype)
        if "mask" in spec.name.lower():
            value = np.ones(shape, dtype)
            if len(shape) == 2 and shape[1] >= 4:
                value[:, -shape[1] // 4:] = 0
        elif dtype.kind == "f":
            value = rng.standard_normal(shape).astype(dtype)
        else:
            value = (rng.integers(1000, 2000, shape) if "type" not in spec.name.lower() else np.zeros(shape)).astype(dtype)
        feeds[spec.name] = value
    return within_tables(path, feeds)


def fuse_encoder(onnx_in: str | Path, onnx_out: str | Path, model=None) -> dict[str, Any]:
    """Write the fused graph to onnx_out when anything fused and it matches the original on ORT within the export
    tolerance; returns {"attention": n, "gelu": n, "kept": bool, "reason": ...}. Nothing is written when not kept.
    model: onnx_in already loaded with its weights (it is rewritten in place), else it is loaded here."""
    import onnx

    from edgeprune._io import atomic_path
    from edgeprune.exporter import DEFAULT_ATOL, compare_outputs, run_reference

    onnx_in = Path(onnx_in)
    model = onnx.load(str(onnx_in)) if model is None else model
    feeds = _feeds(onnx_in)
    counts = fuse(model)
    if not any(counts.values()):
        return dict(counts, kept=False, reason="no attention or erf-GELU pattern matched")
    try:
        with atomic_path(onnx_out, suffix=".onnx") as tmp:
            onnx.save(model, str(tmp))
            try:
                got = run_reference(tmp, feeds)
            except Exception as err:  # ORT refuses the rewritten graph (a removed node's output was still read)
                raise _Declined(f"ONNX Runtime cannot run it: {type(err).__name__}: {str(err)[:200]}") from err
            checks = compare_outputs(run_reference(onnx_in, feeds), got, None, DEFAULT_ATOL)
            bad = [c for c in checks if not c.ok]
            if bad:  # raised inside atomic_path, so the fused file is removed
                raise _Declined(f"it differs: {bad[0]}")
    except _Declined as why:
        return dict(counts, kept=False, reason=f"the fused graph is not the original: {why}")
    return dict(counts, kept=True, reason="matched the original on ORT with padded masks")


class _Declined(Exception):
    """A fused graph that does not reproduce the original."""
