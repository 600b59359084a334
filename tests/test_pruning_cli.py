"""`edgeprune prune` through click's CliRunner: outputs, validated export, one-line errors with exit 2."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import one_error_line as _one_error_line
from edgeprune.cli import main

HERE = Path(__file__).parent
CNN = f"{HERE}/conftest.py:make_cnn"




def test_prune_writes_pt2_onnx_openvino(tmp_path):
    out, onnx_path, xml = tmp_path / "p.pt2", tmp_path / "p.onnx", tmp_path / "p.xml"
    calib = tmp_path / "calib.pt"
    torch.save(torch.randn(16, 3, 32, 32), calib)
    result = CliRunner().invoke(main, ["prune", CNN, "--ratio", "0.5", "--calib", str(calib), "-o", str(out),
                                       "--export", str(onnx_path), "--openvino", str(xml)])
    assert result.exit_code == 0, result.output
    assert "MACs" in result.output and out.is_file() and onnx_path.is_file() and xml.is_file()
    program = torch.export.load(str(out))
    assert program.state_dict["stem.0.weight"].shape[0] == 8


@pytest.mark.parametrize("args, needle", [
    (["--ratio", "1.5"], "outside [0, 1)"),
    (["--importance", "bogus"], "unknown importance"),
    (["--importance", "taylor"], "loss"),
    (["--ignore", "*"], "nothing left to prune"),
    (["--ratio", "0.995", "--importance", "magnitude"], "would keep 0"),
    (["--calib", "/nonexistent.pt"], "calibration file not found"),
])
def test_prune_errors_exit_2_without_partial_file(tmp_path, args, needle):
    out = tmp_path / "p.pt2"
    result = CliRunner().invoke(main, ["prune", CNN, "-o", str(out), *args])
    assert needle in _one_error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_prune_bad_output_suffix(tmp_path):
    result = CliRunner().invoke(main, ["prune", CNN, "-o", str(tmp_path / "p.onnx")])
    assert ".pt2" in _one_error_line(result)
