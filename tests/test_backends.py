"""Real runtime sessions: ONNX Runtime, OpenVINO and torch agree, report per-layer info, reject bad inputs."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import edgeprune as ep
from edgeprune.backends import BackendOptions, availability, get_backend
from edgeprune.errors import BackendUnavailable, ConfigError
from edgeprune.exporter import torch_outputs


def test_import_edgeprune_pulls_in_no_runtime():
    code = ("import sys, edgeprune, edgeprune.backends, edgeprune.cli; "
            "print(sorted(m for m in ('onnxruntime', 'openvino', 'tensorrt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_availability_here():
    avail = availability()
    assert avail["onnxruntime"] is None and avail["openvino"] is None and avail["torch"] is None
    assert "tensorrt" in avail["tensorrt"]


def test_unknown_backend_names_the_choices():
    with pytest.raises(ConfigError, match="onnxruntime, openvino, tensorrt, torch"):
        get_backend("tflite")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtimes_agree_with_torch_and_report_layers(cnn_onnx, backend):
    path, model, inputs = cnn_onnx
    sess = get_backend(backend, BackendOptions(threads=1)).compile(path)
    got = sess.run({"image": inputs[0].numpy()})[0]
    want = torch_outputs(model, inputs)[0]
    assert np.abs(got - want).max() <= 1e-4
    layers = sess.inspect(runs=3)
    ops = {l.op_type for l in layers}
    assert "Convolution" in ops or "Conv" in ops, ops
    assert all(l.time_ms is not None and l.time_ms >= 0 for l in layers)
    assert sess.compile_time_s > 0 and sess.artifact_size_bytes() > 1000
    if backend == "openvino":
        assert all(l.exec_type for l in layers if l.extra.get("status") == "Status.EXECUTED")
        assert not any(l.sparse for l in layers)  # dense fp32 model: no sparse kernel may be claimed


def test_torch_backend_matches_onnxruntime(cnn_onnx):
    path, model, inputs = cnn_onnx
    from edgeprune.models import LoadedModel

    loaded = LoadedModel("cnn", "module", model, inputs, ["image"])
    torch_sess = get_backend("torch").compile(loaded)
    ort_sess = get_backend("onnxruntime").compile(path)
    feeds = {"image": inputs[0].numpy()}
    assert np.abs(torch_sess.run(feeds)[0] - ort_sess.run(feeds)[0]).max() <= 1e-4
    assert [s.name for s in torch_sess.input_specs()] == ["image"]


def test_wrong_input_shape_is_one_clear_error(cnn_onnx):
    path, _, _ = cnn_onnx
    sess = get_backend("onnxruntime").compile(path)
    with pytest.raises(ConfigError, match="input 'image' has shape"):
        sess.prepare_inputs({"image": np.zeros((1, 3, 32), np.float32)})
    with pytest.raises(ConfigError, match="missing input"):
        sess.prepare_inputs({"x": np.zeros((1, 3, 32, 32), np.float32)})


def test_tensorrt_unavailable_here_names_the_package():
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        get_backend("tensorrt").compile("model.onnx")


def test_benchmark_api_on_onnx_file(cnn_onnx):
    path, _, _ = cnn_onnx
    result = ep.benchmark(str(path), backend="openvino", warmup=2, iters=20, rounds=2, batch=4, threads=1)
    assert result.batch == 4 and result.stats.n == 20 and len(result.round_p50_ms) == 2
    assert result.stats.min <= result.stats.p50 <= result.stats.p90 <= result.stats.p99 <= result.stats.max
    assert result.throughput == pytest.approx(4000.0 / result.stats.mean)
    assert result.env["versions"]["openvino"] and result.artifact_bytes > 0


def test_benchmark_api_exports_a_module(tmp_path):
    from conftest import make_mlp

    result = ep.benchmark(make_mlp(), backend="onnxruntime", warmup=1, iters=10, rounds=2)
    assert result.name == "MLP" and result.stats.n == 10
