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
    (["--calib", "/nonexistent.pt"], "calibration data not found"),
])
def test_prune_errors_exit_2_without_partial_file(tmp_path, args, needle):
    out = tmp_path / "p.pt2"
    result = CliRunner().invoke(main, ["prune", CNN, "-o", str(out), *args])
    assert needle in _one_error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_prune_bad_output_suffix(tmp_path):
    result = CliRunner().invoke(main, ["prune", CNN, "-o", str(tmp_path / "p.onnx")])
    assert ".pt2" in _one_error_line(result)


def _photos(folder, n, seed, classes=None):
    """n random-pixel PNG photos (40x40) in `folder`, or spread over class subfolders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / classes[i % len(classes)] if classes else folder
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(sub / f"{seed}_{i}.png")
    return folder


def test_prune_image_folders_with_held_out_score(tmp_path):
    import re

    calib = _photos(tmp_path / "calib", 12, seed=0)
    held_out = _photos(tmp_path / "eval", 6, seed=1, classes=["a", "b"])  # labelled: a class-per-subfolder tree
    out = tmp_path / "p.pt2"
    result = CliRunner().invoke(main, ["prune", CNN, "--ratio", "0.25", "--calib", str(calib), "--eval-data", str(held_out),
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if l.startswith("held-out"))
    m = re.match(r"held-out 6 samples: cosine to dense (\S+), top-1 agreement (\S+)%, label accuracy (\S+)% dense -> (\S+)%",
                 line)
    assert m, line
    cosine, agreement = float(m[1]), float(m[2])
    assert 0.5 < cosine <= 1.0 and agreement in {round(100 * k / 6, 1) for k in range(7)}
    assert out.is_file()


def test_prune_refuses_eval_data_that_overlaps_calib(tmp_path):
    import shutil

    calib = _photos(tmp_path / "data" / "calib", 8, seed=0)
    out = tmp_path / "p.pt2"
    same = _one_error_line(CliRunner().invoke(main, ["prune", CNN, "--calib", str(calib), "--eval-data", str(calib),
                                                     "-o", str(out)]))
    assert "eval data" in same and "are the same file(s)" in same and "hold out samples" in same
    held_out = _photos(tmp_path / "data" / "eval", 4, seed=5)
    for name in sorted(p.name for p in calib.iterdir())[:3]:
        shutil.copy(calib / name, held_out / f"copy_{name}")
    shared = _one_error_line(CliRunner().invoke(main, ["prune", CNN, "--calib", str(calib), "--eval-data", str(held_out),
                                                       "-o", str(out)]))
    assert "shares 3 of 7 samples with calib data" in shared
    assert not out.exists()
