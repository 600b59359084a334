"""In-context conv times: ONNX node -> torch layer mapping, real ORT/OpenVINO profiles, the per-layer correction."""
from __future__ import annotations

import numpy as np
import pytest

from edgeprune.measurement.latency import LayerShape
from edgeprune.optimizer.context import (ContextCorrection, context_correction, conv_order, map_nodes, profile_layers,
                                        weighted_nodes)
from tests.pruning_models import make_concat, make_ir

IR_CONVS = ["stem.0", "expand.0", "dw.0", "project.0", "gconv.0"]


@pytest.fixture(scope="module")
def ir_onnx(tmp_path_factory):
    from edgeprune.exporter import export

    model, example = make_ir()
    path = tmp_path_factory.mktemp("ctx") / "ir.onnx"
    export(model, example, path, input_names=["x"])
    return model, example, path


def test_every_conv_maps_to_its_onnx_node_in_order(ir_onnx, tmp_path):
    from edgeprune.exporter import export

    model, example, path = ir_onnx
    layers = conv_order(model, example)
    assert [n for n, _ in layers] == IR_CONVS
    assert [s for _, s in layers] == [s for _, s in weighted_nodes(path)]  # BN folded, weight shapes kept
    mapping = map_nodes(layers, weighted_nodes(path))
    assert sorted(set(mapping.values())) == sorted(IR_CONVS)
    # two convs with the same weight shape (ConcatNet a, b) pair in graph order, not by shape alone
    concat, ex = make_concat()
    export(concat, ex, tmp_path / "c.onnx", input_names=["x"])
    nodes = weighted_nodes(tmp_path / "c.onnx")
    mapping = map_nodes(conv_order(concat, ex), nodes)
    assert mapping[nodes[0][0][0]] == "a.0" and mapping[nodes[1][0][0]] == "b.0"


def test_a_layer_missing_from_the_graph_gives_no_mapping(ir_onnx):
    model, example, path = ir_onnx
    layers = conv_order(model, example) + [("extra", (7, 7, 1, 1))]
    assert map_nodes(layers, weighted_nodes(path)) == {}


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_runtime_profiler_reports_every_conv(ir_onnx, runtime):
    from edgeprune.backends import BackendOptions, get_backend

    model, example, path = ir_onnx
    sess = get_backend(runtime, BackendOptions(threads=1)).compile(path)
    mapping = map_nodes(conv_order(model, example), weighted_nodes(path))
    per, total = profile_layers(sess, {"x": example[0].numpy()}, mapping, runs=5)
    # ORT reports fused convs under the last fused op's output (+ "_nchwc"), OpenVINO under the ONNX name
    assert sorted(per) == sorted(IR_CONVS)
    assert all(t > 0 for t in per.values()) and sum(per.values()) <= total * 1.0001


def test_rho_interpolates_in_macs_and_leaves_linears_alone():
    corr = ContextCorrection({"a": [(400.0, 0.3), (100.0, 0.5)]}, default=0.7)
    conv = lambda m: LayerShape(m, 1, 1, "conv")  # noqa: E731
    assert corr.rho("a", conv(250)) == pytest.approx(0.4)
    assert corr.rho("a", conv(50)) == pytest.approx(0.5) and corr.rho("a", conv(1000)) == pytest.approx(0.3)
    assert corr.rho("unmapped", conv(250)) == pytest.approx(0.7)
    assert corr.rho("a", LayerShape(250, 1, 1, "linear")) == 1.0
    cost = corr.apply(lambda s, name=None: 2e-3)
    assert cost(conv(250), "a") == pytest.approx(0.8e-3)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_corrected_conv_costs_add_up_to_their_share_of_the_measured_model(ir_onnx, runtime):
    """Each anchor's profile is scaled to its measured wall time, so the corrected dense convs cost exactly the
    profiled conv share of that time: more than nothing, never more than the whole model."""
    from edgeprune.backends import BackendOptions, get_backend

    model, example, path = ir_onnx
    sess = get_backend(runtime, BackendOptions(threads=1)).compile(path)
    feeds = {"x": example[0].numpy()}
    layers = dict(conv_order(model, example))
    shapes = {n: LayerShape(64, w[1] * w[2] * w[3], w[0], "conv", w[2], 1) for n, w in layers.items()}
    wall = 1e-3
    corr = context_correction(model, example, [(path, shapes)], [sess], feeds, [wall], lambda s, name=None: 1e-4)
    assert corr is not None and sorted(corr.points) == sorted(IR_CONVS)
    corrected = sum(corr.rho(n, s) * 1e-4 for n, s in shapes.items())
    assert 0.05 * wall < corrected <= wall * 1.0001
    assert np.isfinite(corr.default) and corr.summary()["layers"] == 5
