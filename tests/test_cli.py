"""Every CLI command through click's CliRunner, including its error exits (one line, exit 2, no partial file)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import one_error_line as _one_error_line
from edgeprune.cli import main

HERE = Path(__file__).parent
MLP = f"{HERE}/models_for_cli.py:mlp_with_inputs"





def test_version_and_help(runner):
    assert runner.invoke(main, ["--version"]).exit_code == 0
    out = runner.invoke(main, ["--help"]).output
    for cmd in ("bench", "export", "profiles"):
        assert cmd in out


def test_export_writes_onnx_ir_and_report(runner, tmp_path):
    onnx_path, xml_path, report = tmp_path / "m.onnx", tmp_path / "m.xml", tmp_path / "r.json"
    result = runner.invoke(main, ["export", MLP, "-o", str(onnx_path), "--openvino", str(xml_path), "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert onnx_path.stat().st_size > 0 and xml_path.is_file() and xml_path.with_suffix(".bin").is_file()
    doc = json.loads(report.read_text())
    assert [d["runtime"] for d in doc] == ["onnxruntime", "openvino"]
    assert all(o["max_abs_diff"] <= 1e-4 for d in doc for o in d["outputs"])


def test_debug_shows_the_traceback(runner, tmp_path):
    result = runner.invoke(main, ["--debug", "export", "nope.py:f", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code != 0 and result.exception is not None
    assert type(result.exception).__name__ == "ModelLoadError"


def test_bench_two_models_prints_speedup_and_writes_files(runner, tmp_path, cnn_onnx):
    path, _, _ = cnn_onnx
    js, md = tmp_path / "b.json", tmp_path / "b.md"
    result = runner.invoke(main, ["bench", MLP, str(path), "--warmup", "2", "--iters", "12", "--rounds", "3",
                                  "--threads", "1", "--json", str(js), "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    assert "baseline" in result.output and "rounds" in result.output
    doc = json.loads(js.read_text())
    assert [r["name"] for r in doc["results"]] == ["models_for_cli", "cnn"]
    assert len(doc["speedups"]) == 1 and doc["speedups"][0]["rounds"] == 3
    assert all(r["stats"]["n"] == 12 and r["settle_s"] == 0.15 for r in doc["results"])  # a comparison settles
    assert "| models_for_cli | onnxruntime |" in md.read_text() and "Environment:" in md.read_text()
    assert "each after a 0.15 s untimed settle" in md.read_text()


def test_bench_torch_and_openvino_backends(runner, cnn_onnx):
    result = runner.invoke(main, ["bench", MLP, "-b", "torch", "-b", "openvino", "--warmup", "1", "--iters", "6", "--rounds", "2"])
    assert result.exit_code == 0, result.output
    assert "torch" in result.output and "openvino" in result.output


@pytest.mark.parametrize("args, fragment", [
    (["bench", MLP, "--batch", "0"], "--batch must be >= 1"),
    (["bench", MLP, "-b", "tflite"], "unknown backend 'tflite'"),
    (["bench", MLP, "-b", "tensorrt"], "backend 'tensorrt' is unavailable"),
    (["bench", "missing.onnx"], "model file not found"),
    (["bench", MLP, "--iters", "2", "--rounds", "5"], "iters must be >= rounds"),
])
def test_bench_errors(runner, tmp_path, args, fragment):
    js = tmp_path / "out.json"
    line = _one_error_line(runner.invoke(main, args + ["--json", str(js)]))
    assert fragment in line
    assert not js.exists()
