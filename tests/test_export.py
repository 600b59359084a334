"""Export is validated on the real runtimes: ONNX Runtime and OpenVINO against PyTorch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SMALL_MODELS
from edgeprune.backends import BackendOptions, get_backend
from edgeprune.errors import ConfigError, ExportError
from edgeprune.exporter import compare_outputs, export, convert, torch_outputs


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_small_models_export_within_1e4_on_ort_and_openvino(tmp_path, name):
    model, inputs = SMALL_MODELS[name]()
    report = export(model, inputs, tmp_path / f"{name}.onnx")
    assert report.exporter == "dynamo"
    assert report.ok and report.max_abs_diff <= 1e-4
    assert all(c.cosine > 0.99999 for c in report.checks)

    reference = torch_outputs(model, inputs)
    feeds = {"input_0": inputs[0].numpy()}
    ov_report = convert(tmp_path / f"{name}.onnx", tmp_path / f"{name}.xml", "openvino", reference=(reference, feeds))
    assert ov_report.max_abs_diff <= 1e-4
    assert (tmp_path / f"{name}.bin").stat().st_size > 0


def test_minilm_export_within_1e4(minilm_onnx, minilm):
    path, report = minilm_onnx
    assert report.checks[0].shape == (1, 128, 384)
    assert report.max_abs_diff <= 1e-4
    ov = get_backend("openvino", BackendOptions(precision="fp32")).compile(path)
    feeds = {n: t.numpy() for n, t in zip(minilm.input_names, minilm.example_inputs)}
    got = ov.run(feeds)[0]
    want = torch_outputs(minilm.module, minilm.example_inputs)[0]
    assert np.abs(got - want).max() <= 1e-4


def test_dynamic_batch_runs_other_batch_sizes(cnn_onnx):
    path, model, _ = cnn_onnx
    x = torch.randn(5, 3, 32, 32)
    ort = get_backend("onnxruntime").compile(path)
    assert ort.input_specs()[0].shape[0] == "batch"
    got = ort.run({"image": x.numpy()})[0]
    want = torch_outputs(model, (x,))[0]
    assert got.shape == (5, 10)
    assert np.abs(got - want).max() <= 1e-4


def test_mismatch_lists_every_failing_output_and_leaves_no_file(tmp_path):
    model, inputs = SMALL_MODELS["mlp"]()
    target = tmp_path / "mlp.onnx"
    with pytest.raises(ExportError) as info:
        export(model, inputs, target, atol=-1.0)  # nothing can pass a negative tolerance
    assert "1 of 1 output(s)" in str(info.value) and "output_0 (4, 10)" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_compare_outputs_numbers():
    ref = [np.ones((2, 3)), np.full((4,), 10.0)]
    got = [np.ones((2, 3)) + 5e-5, np.full((4,), 10.0) + 5e-4]
    checks = compare_outputs(ref, got, ["a", "b"])
    assert checks[0].ok and abs(checks[0].max_abs_diff - 5e-5) < 1e-9
    # b has magnitude 10: tolerance is relative there (1e-4 * 10 = 1e-3)
    assert checks[1].tolerance == pytest.approx(1e-3) and checks[1].ok
    bad = compare_outputs([np.ones(3)], [np.ones(4)])[0]
    assert not bad.ok


def test_noisy_model_fails_validation(tmp_path):
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x + torch.rand_like(x)

    with pytest.raises(ExportError, match="disagrees with the PyTorch model"):
        export(Noisy(), (torch.randn(2, 4),), tmp_path / "noisy.onnx")
    assert not (tmp_path / "noisy.onnx").exists()


def test_bad_opset_is_a_config_error(tmp_path):
    model, inputs = SMALL_MODELS["mlp"]()
    with pytest.raises(ConfigError, match="opset 99"):
        export(model, inputs, tmp_path / "x.onnx", opset=99)
