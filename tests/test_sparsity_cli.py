"""`edgeprune sparsify` through click's CliRunner: outputs, re-checked pattern, one-line errors that leave nothing."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import one_error_line as _one_error_line
from edgeprune.cli import main
from edgeprune.sparsity import NM
from edgeprune.sparsity.onnx_check import check_onnx

HERE = Path(__file__).parent
MLP = f"{HERE}/models_for_cli.py:mlp_with_inputs"
CNN = f"{HERE}/models_for_cli.py:cnn_only"





def test_sparsify_writes_pt2_qdq_onnx_and_report(runner, tmp_path):
    pt2, onnx_path, js, md = tmp_path / "m.pt2", tmp_path / "m.onnx", tmp_path / "r.json", tmp_path / "r.md"
    result = runner.invoke(main, ["sparsify", MLP, "--pattern", "2:4", "--method", "sparsegpt", "-o", str(pt2),
                                  "--export", str(onnx_path), "--precision", "int8", "--json", str(js), "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    program = torch.export.load(str(pt2))
    weights = [v for k, v in program.state_dict.items() if k.endswith("weight")]
    assert weights and all(NM(2, 4).check(w).ok for w in weights)
    assert check_onnx(onnx_path, "2:4").ok
    doc = json.loads(js.read_text())
    assert doc["global_sparsity"] == 0.5 and doc["pattern_ok"] and doc["config"]["deploy_precision"] == "int8"
    assert "pattern 2:4 kept" in doc["evidence"]["onnx"]
    assert {v["runtime"] for v in doc["layers"][0]["verdicts"]} == {"onnxruntime", "openvino", "tensorrt", "torch-cuda"}
    assert any("synthetic" in n for n in doc["notes"])
    assert "| net.0 |" in md.read_text()


def test_sparsify_cnn_skip_incompatible(runner, tmp_path):
    js = tmp_path / "r.json"
    result = runner.invoke(main, ["sparsify", CNN, "--input-shape", "1x3x16x16", "--method", "magnitude",
                                  "--skip-incompatible", "--json", str(js)])
    assert result.exit_code == 0, result.output
    layers = {l["name"]: l for l in json.loads(js.read_text())["layers"]}
    assert layers["stem.0"]["status"] == "skipped" and layers["block.0"]["sparsity"] == 0.5


def test_sparsify_with_calibration_file(runner, tmp_path):
    calib = tmp_path / "calib.pt"
    torch.save((torch.randn(16, 32),), calib)
    js = tmp_path / "r.json"
    result = runner.invoke(main, ["sparsify", MLP, "--pattern", "unstructured", "--sparsity", "0.6", "--method", "wanda",
                                  "--calib", str(calib), "--json", str(js)])
    assert result.exit_code == 0, result.output
    doc = json.loads(js.read_text())
    assert doc["calibration_samples"] == 16 and abs(doc["global_sparsity"] - 0.6) < 0.01
    assert not any("synthetic" in n for n in doc["notes"])


def test_sparsify_train_and_eval_data(runner, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 32)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x[:16])
    np.savez(tmp_path / "train.npz", x=x[16:32])
    np.savez(tmp_path / "eval.npz", x=x[32:])
    np.savez(tmp_path / "leak.npz", x=np.concatenate([x[32:40], x[:4]]))  # 4 calibration rows leaked into eval
    js = tmp_path / "r.json"
    base = ["sparsify", MLP, "--pattern", "unstructured", "--sparsity", "0.5", "--method", "wanda", "--calib",
            str(tmp_path / "calib.npz")]
    result = runner.invoke(main, [*base, "--allocation", "learned", "--train", str(tmp_path / "train.npz"), "--eval-data",
                                  str(tmp_path / "eval.npz"), "--json", str(js)])
    assert result.exit_code == 0, result.output
    doc = json.loads(js.read_text())
    assert doc["calibration_samples"] == 16 and doc["allocation"] is not None
    assert doc["evidence"]["held_out"].startswith("held-out 16 samples: cosine to dense 0.")
    assert "held-out 16 samples" in result.output
    leak = _one_error_line(runner.invoke(main, [*base, "--eval-data", str(tmp_path / "leak.npz")]))
    assert "shares 4 of 12 samples with calib data" in leak
    train_leak = _one_error_line(runner.invoke(main, [*base, "--allocation", "learned", "--train", str(tmp_path / "train.npz"),
                                                      "--eval-data", str(tmp_path / "train.npz")]))
    assert "and train data" in train_leak and "same file(s): train.npz" in train_leak
    uniform = _one_error_line(runner.invoke(main, [*base, "--train", str(tmp_path / "train.npz")]))
    assert "--train feeds the learned allocation only" in uniform
