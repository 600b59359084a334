"""The pattern survives ONNX export, FP16 conversion and Q/DQ int8 quantization — re-checked in the saved files."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import edgeprune as ep
from edgeprune.exporter import export
from edgeprune.sparsity import SparsityConfig
from edgeprune.sparsity.onnx_check import check_onnx, convert_fp16, quantize_qdq

from conftest import make_cnn, make_encoder, make_mlp

CASES = {
    "encoder-2:4": (make_encoder, "2:4", None, 3),  # out_proj (Gemm) + linear1/linear2 (MatMul, pre-transposed)
    "encoder-block4x4": (make_encoder, "block4x4", 0.6, 3),
    "cnn-2:4": (make_cnn, "2:4", None, 2),  # block.0 Conv groups along C_in per kernel position + head Gemm
    "mlp-unstructured": (make_mlp, "unstructured", 0.7, 2),
}


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory):
    make, pattern, sparsity, n_weights = CASES[request.param]
    model, inputs = make()
    cfg = SparsityConfig(pattern=pattern, sparsity=sparsity, method="sparsegpt", on_incompatible="skip")
    sparse = ep.sparsify(model, inputs, cfg, calib=inputs)
    path = tmp_path_factory.mktemp("sp") / "m.onnx"
    export(sparse, inputs, path)
    return sparse, inputs, path, pattern, n_weights


def _assert_kept(report, n_weights, quantized=False):
    assert report.ok, [(w.initializer, w.layer, w.check.detail) for w in report.failures()] + report.missing
    assert len(report.weights) == n_weights and not report.missing
    assert all(w.zeros_preserved for w in report.weights)
    assert all(w.quantized == quantized for w in report.weights)


def test_pattern_survives_export(exported):
    sparse, _, path, pattern, n = exported
    report = check_onnx(path, pattern, model=sparse)
    _assert_kept(report, n)
    layouts = {w.op: w.layout for w in report.weights}
    if "MatMul" in layouts:  # the dynamo exporter folds the transpose: the file holds (in, out)
        assert "axis 0" in layouts["MatMul"]


def test_pattern_survives_fp16(exported, tmp_path):
    sparse, _, path, pattern, n = exported
    fp16 = convert_fp16(path, tmp_path / "m16.onnx")
    report = check_onnx(fp16, pattern, model=sparse)
    _assert_kept(report, n)
    assert {w.stored_dtype for w in report.weights} == {"float16"}


def test_pattern_survives_qdq(exported, tmp_path):
    sparse, inputs, path, pattern, n = exported
    feeds = [{"input_0": t.numpy()} for t in inputs]
    qdq = quantize_qdq(path, tmp_path / "mq.onnx", feeds)
    ops = {node.op_type for node in onnx.load(str(qdq)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    report = check_onnx(qdq, pattern, model=sparse)
    _assert_kept(report, n, quantized=True)
    assert {w.stored_dtype for w in report.weights} == {"int8"}


def test_dense_file_fails_the_check(tmp_path):
    model, inputs = make_mlp()
    path = tmp_path / "dense.onnx"
    export(model, inputs, path)
    report = check_onnx(path, "2:4")
    assert not report.ok and "fewer than 2 zeros" in report.failures()[0].check.detail
    assert report.weights[0].layout.startswith("Gemm transB=1")


def test_missing_layer_is_reported(exported, tmp_path):
    sparse, _, path, pattern, _ = exported
    report = check_onnx(path, pattern, model=sparse, layers=["not.a.layer"])
    assert report.missing == ["not.a.layer"] and not report.ok


def test_zero_point_counts_as_zero_in_asymmetric_int8(tmp_path):
    """A stored int8 value represents 0.0 when it equals the zero point, not when it is 0."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([[5, 5, 7, 9], [1, 5, 5, 2]], dtype=np.int8)  # zero point 5: both rows have two zeros in 4
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "s", "zp"], ["wf"]), helper.make_node("MatMul", ["x", "wf"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w.T.copy(), "w"), numpy_helper.from_array(np.array(0.1, np.float32), "s"),
         numpy_helper.from_array(np.array(5, np.int8), "zp")])
    path = tmp_path / "zp.onnx"
    onnx.save(helper.make_model(graph), str(path))
    report = check_onnx(path, "2:4", min_elements=1)
    assert report.ok and report.weights[0].quantized and report.sparsity == 0.5
