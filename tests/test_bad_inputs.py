"""The bad-input battery: every CLI command x every kind of bad input, as one table.

Each row runs the real command in-process (click's runner, real ONNX Runtime / OpenVINO behind it) and asserts
what a user must see: exit 2, exactly one line starting with "error: " that holds the row's fragment, no
traceback, and no new file in the output folder or beside the inputs. The damaged inputs are built once per
module in `bad` (see `_build_inputs`); OUT is a fresh folder per row.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from bad_inputs_data import build_inputs

M = "BAD/models.py"
MLP, CNN = f"{M}:mlp", f"{M}:cnn"
NPY = "--input-shape", "1x32"

CASES = [
    # ---- sweep files: one problem each, refused before Ray starts ----
    ("sweep", ["sweep", "BAD/none.yaml", "-o", "OUT/s"], "sweep file not found"),
    ("sweep", ["sweep", "BAD/sweep_budget.yaml", "-o", "OUT/s"], "each speedup must be above 1 (got 0.9)"),
    ("sweep", ["sweep", "BAD/sweep_nan.yaml", "-o", "OUT/s"], "each speedup must be above 1 (got nan)"),
    ("sweep", ["sweep", "BAD/sweep_list.yaml", "-o", "OUT/s"], "top level is a list"),
    ("sweep", ["sweep", "BAD/sweep_field.yaml", "-o", "OUT/s"], "field 'precision': unknown field"),
    # ---- model specs (every command that loads a model goes through the same loader) ----
    ("export", ["export", "BAD/none.py:f", "-o", "OUT/m.onnx"], "model file not found"),
    ("export", ["export", f"{M}:nothere", "-o", "OUT/m.onnx"], "nothere"),
    ("export", ["export", f"{M}:not_a_model", "-o", "OUT/m.onnx"], "nn.Module"),
    ("export", ["export", f"{M}:broken", "-o", "OUT/m.onnx"], "factory exploded"),
    ("export", ["export", f"{M}:nan_weight", "-o", "OUT/m.onnx"], "net.0.weight"),
    ("export", ["export", f"{M}:inf_weight", "-o", "OUT/m.onnx"], "net.2.bias"),
    ("export", ["export", f"{M}:nan_inputs", "-o", "OUT/m.onnx"], "example input"),
    ("export", ["export", "BAD/corrupt.pt2", "-o", "OUT/m.onnx"], "corrupt.pt2"),
    ("export", ["export", "BAD/newer.pt2", "-o", "OUT/m.onnx"], "saved by torch 9.9.0"),
    ("export", ["export", "BAD/hf_badconfig", "-o", "OUT/m.onnx"], "config.json"),
    ("export", ["export", "BAD/hf_empty", "-o", "OUT/m.onnx"], "hf_empty"),
    ("export", ["export", MLP, "-o", "OUT/m.txt"], "must end in .onnx"),
    ("export", ["export", MLP, "-o", "OUT/m.onnx", "--openvino", "OUT/m.bin"], "must end in .xml"),
    ("export", ["export", MLP, "-o", "OUT/m.onnx", "--opset", "3"], "opset 3"),
    ("export", ["export", f"{M}:bad_output", "-o", "OUT/m.onnx"], "disagrees with the PyTorch model"),
    ("export", ["export", f"{M}:cnn_only", "-o", "OUT/m.onnx", "--input-shape", "1xx3"], "bad input shape"),
    ("export", ["export", f"{M}:cnn_only", "-o", "OUT/m.onnx", "--input-shape", "1x3x0x8"], "input shape"),
    ("export", ["export", MLP, "-o", "OUT/m.onnx", "--atol", "nan"], "--atol"),
    # ---- prune ----
    ("prune", ["prune", f"{M}:nan_weight", "--ratio", "0.3", "-o", "OUT/m.pt2"], "net.0.weight"),
    ("prune", ["prune", MLP, "--ratio", "1.5", "-o", "OUT/m.pt2"], "ratio"),
    ("prune", ["prune", MLP, "--ratio", "nan", "-o", "OUT/m.pt2"], "ratio"),
    ("prune", ["prune", MLP, "--ratio", "0.3", "--importance", "vibes", "-o", "OUT/m.pt2"], "unknown importance"),
    ("prune", ["prune", MLP, "--ratio", "0.3", "-o", "OUT/m.onnx"], ".pt2"),
    ("prune", ["prune", MLP, "--ratio", "0.3", "--calib", "BAD/nan.npy", "-o", "OUT/m.pt2"], "nan.npy"),
    ("prune", ["prune", MLP, "--ratio", "0.3", "--calib", "BAD/inf.npy", "-o", "OUT/m.pt2"], "inf.npy"),
    ("prune", ["prune", MLP, "--ratio", "0.3", "--calib", "BAD/nan.pt", "-o", "OUT/m.pt2"], "nan.pt"),
    ("prune", ["prune", MLP, "--ratio", "0.3", "--calib", "BAD/wrong_width.npy", "-o", "OUT/m.pt2"], "wrong_width.npy"),
    ("prune", ["prune", MLP, "--ratio", "0.3", "--calib", "BAD/none.npy", "-o", "OUT/m.pt2"], "not found"),
    ("prune", ["prune", MLP, "--ratio", "0.3", "--calib", "BAD/data.xyz", "-o", "OUT/m.pt2"], "data.xyz"),
    ("prune", ["prune", MLP, "--ratio", "0.3", "--calib", "BAD/empty_dir", "-o", "OUT/m.pt2"], "empty_dir"),
    ("prune", ["prune", MLP, "--ratio", "0.3", "--calib", "BAD/pickle.npy", "-o", "OUT/m.pt2"], "pickle.npy"),
    ("prune", ["prune", MLP, "--ratio", "0.3", "--calib", "BAD/good.npy", "--eval-data", "BAD/good.npy",
               "-o", "OUT/m.pt2"], "good.npy"),
    ("prune", ["prune", MLP, "--ratio", "0.3", "--profile", "no-such-device", "-o", "OUT/m.pt2"], "no-such-device"),
    # ---- sparsify ----
    ("sparsify", ["sparsify", MLP, "--pattern", "3:2", "-o", "OUT/m.pt2"], "1 <= N < M"),
    ("sparsify", ["sparsify", MLP, "--pattern", "block128x128", "--strict", "-o", "OUT/m.pt2"], "larger than the weight"),
    ("sparsify", ["sparsify", MLP, "--pattern", "block128x128", "-o", "OUT/m.pt2"], "all 2 were skipped"),
    ("sparsify", ["sparsify", MLP, "--pattern", "diagonal", "-o", "OUT/m.pt2"], "unknown sparsity pattern"),
    ("sparsify", ["sparsify", MLP, "--pattern", "2:4", "--sparsity", "0.7", "-o", "OUT/m.pt2"], "fixes sparsity"),
    ("sparsify", ["sparsify", MLP, "-o", "OUT/m.onnx"], "must end in .pt2"),
    ("sparsify", ["sparsify", MLP, "--export", "OUT/m.pt2"], "must end in .onnx"),
    ("sparsify", ["sparsify", f"{M}:cnn_only", "--input-shape", "1x3x16x16", "--strict", "-o", "OUT/m.pt2"],
     "C_in=3 is not divisible by 4"),
    ("sparsify", ["sparsify", MLP, "--pattern", "2:4", "--allocation", "learned", "-o", "OUT/m.pt2"], "learned allocation cannot"),
    ("sparsify", ["sparsify", MLP, "--method", "wanda", "--calib", "BAD/none.pt", "-o", "OUT/m.pt2"], "calibration data not found"),
    ("sparsify", ["sparsify", MLP, "--method", "wanda", "--calib", "BAD/nan.npy", "-o", "OUT/m.pt2"], "nan.npy"),
    ("sparsify", ["sparsify", f"{M}:inf_weight", "-o", "OUT/m.pt2"], "net.2.bias"),
    # ---- quantize ----
    ("quantize", ["quantize", "BAD/good.onnx", "-b", "onnxruntime", "--calib", "BAD/nan.npy", "-o", "OUT/q.onnx"], "nan.npy"),
    ("quantize", ["quantize", "BAD/good.onnx", "-b", "openvino", "--calib", "BAD/inf.npy", "-o", "OUT/q.xml"], "inf.npy"),
    ("quantize", ["quantize", "BAD/good.onnx", "-b", "onnxruntime", "--calib", "BAD/wrong_width.npy", "-o", "OUT/q.onnx"],
     "wrong_width.npy"),
    ("quantize", ["quantize", "BAD/trunc.onnx", "-b", "onnxruntime", "--dynamic", "-o", "OUT/q.onnx"], "trunc.onnx"),
    ("quantize", ["quantize", "BAD/good.onnx", "-b", "onnxruntime", "--dynamic", "-o", "OUT/q.xml"], ".onnx"),
    ("quantize", ["quantize", "BAD/good.onnx", "-b", "openvino", "--calib", "BAD/good.npy", "-o", "OUT/q.onnx"], ".xml"),
    ("quantize", ["quantize", f"{M}:nan_weight", "-b", "onnxruntime", "--dynamic", "-o", "OUT/q.onnx"], "net.0.weight"),
    ("quantize", ["quantize", "BAD/good.onnx", "-b", "onnxruntime", "--calib", "BAD/good.npy", "--eval-data", "BAD/good.npy",
                  "-o", "OUT/q.onnx"], "good.npy"),
    ("quantize", ["quantize", "BAD/good.onnx", "-b", "onnxruntime", "--calib", "BAD/good.npy", "--min-cosine", "nan",
                  "-o", "OUT/q.onnx"], "--min-cosine"),
    # ---- optimize ----
    ("optimize", ["optimize", MLP, "--speedup", "0.5", "-o", "OUT/o"], "speedup must be > 1"),
    ("optimize", ["optimize", MLP, "--speedup", "nan", "-o", "OUT/o"], "speedup"),
    ("optimize", ["optimize", MLP, "--speedup", "inf", "-o", "OUT/o"], "speedup"),
    ("optimize", ["optimize", MLP, "--max-drop", "-1", "-o", "OUT/o"], "max-drop"),
    ("optimize", ["optimize", MLP, "--recover-minutes", "nan", "-o", "OUT/o"], "recover-minutes"),
    ("optimize", ["optimize", MLP, "--profile", "no-such-device", "-o", "OUT/o"], "no-such-device"),
    ("optimize", ["optimize", MLP, "--profile", "BAD/broken.yaml", "-o", "OUT/o"], "broken.yaml"),
    ("optimize", ["optimize", MLP, "--profile", "BAD/nan_profile.yaml", "-o", "OUT/o"], "nan_profile.yaml"),
    ("optimize", ["optimize", MLP, "--runtime", "tensorflow", "-o", "OUT/o"], "tensorflow"),
    ("optimize", ["optimize", MLP, "--calib", "BAD/nan.npy", "-o", "OUT/o"], "nan.npy"),
    ("optimize", ["optimize", MLP, "--calib", "BAD/good.npy", "--eval-data", "BAD/good.npy", "-o", "OUT/o"], "good.npy"),
    ("optimize", ["optimize", MLP, "--eval", "BAD/none.py:score", "-o", "OUT/o"], "none.py"),
    ("optimize", ["optimize", f"{M}:nan_weight", "-o", "OUT/o"], "net.0.weight"),
    ("optimize", ["optimize", f"{M}:nan_inputs", "-o", "OUT/o"], "example input"),
    ("optimize", ["optimize", MLP, "--resume", "BAD/empty_dir", "-o", "OUT/o"], "empty_dir"),
    # ---- apply ----
    ("apply", ["apply", "BAD/none/plan.json", MLP, "-o", "OUT/x.onnx"], "plan not found"),
    ("apply", ["apply", "BAD/plan_v99.json", MLP, "-o", "OUT/x.txt"], "must end in .onnx"),
    ("apply", ["apply", "BAD/plan_v99.json", MLP, "-o", "OUT/x.onnx"], "field 'version'"),
    ("apply", ["apply", "BAD/plan_notjson.json", MLP, "-o", "OUT/x.onnx"], "not JSON"),
    ("apply", ["apply", "BAD/plan_other.json", MLP, "-o", "OUT/x.onnx"], "encoder.layer.0"),
    ("apply", ["apply", "BAD/plan_wider.json", MLP, "-o", "OUT/x.onnx"], "width"),
    # ---- bench ----
    ("bench", ["bench", "BAD/trunc.onnx", "-b", "onnxruntime"], "not a readable ONNX model"),
    ("bench", ["bench", "BAD/text.onnx", "-b", "onnxruntime"], "not a readable ONNX model"),
    ("bench", ["bench", "BAD/ext/missing.onnx", "-b", "onnxruntime"], "external data file"),
    ("bench", ["bench", "BAD/ext/escape.onnx", "-b", "onnxruntime"], "outside the model's folder"),
    ("bench", ["bench", "BAD/opset99.onnx", "-b", "onnxruntime"], "opset"),
    ("bench", ["bench", "BAD/lonely.xml", "-b", "openvino"], "lonely.bin is missing"),
    ("bench", ["bench", "BAD/none.onnx", "-b", "onnxruntime"], "none.onnx"),
    ("bench", ["bench", "BAD/good.onnx", "-b", "tflite"], "tflite"),
    ("bench", ["bench", "BAD/good.onnx", "-b", "onnxruntime", "--iters", "0"], "iters"),
    ("bench", ["bench", "BAD/good.onnx", "-b", "onnxruntime", "--rounds", "0"], "rounds"),
    # ---- bundle / bench-bundle ----
    ("bundle", ["bundle", "BAD/empty_dir", "-o", "OUT/b.tar.gz"], "no runtime artifact"),
    ("bundle", ["bundle", "BAD/outdir", "-o", "OUT/b.zip"], "must end in .tar.gz"),
    ("bundle", ["bundle", "BAD/none", "-o", "OUT/b.tar.gz"], "not a folder"),
    ("bundle", ["bundle", "BAD/outdir_broken", "-o", "OUT/b.tar.gz"], "onnxruntime cannot load m.onnx"),
    ("bundle", ["bundle", "BAD/outdir_badmeta", "-o", "OUT/b.tar.gz"], "cannot read"),
    ("bench-bundle", ["bench-bundle", "BAD/none.tar.gz"], "bundle not found"),
    ("bench-bundle", ["bench-bundle", "BAD/text.onnx"], "text.onnx"),
    ("bench-bundle", ["bench-bundle", "BAD/b_extra.tar.gz"], "extra.txt"),
    ("bench-bundle", ["bench-bundle", "BAD/b_missing.tar.gz"], "m.onnx"),
    ("bench-bundle", ["bench-bundle", "BAD/b_tampered.tar.gz"], "checksum mismatch"),
    ("bench-bundle", ["bench-bundle", "BAD/b_probe.tar.gz"], "reference"),
    ("bench-bundle", ["bench-bundle", "BAD/b_dotdot.tar.gz"], "unsafe path"),
    ("bench-bundle", ["bench-bundle", "BAD/b_symlink.tar.gz"], "is a link"),
    # ---- report / profiles ----
    ("report", ["report", "BAD/none"], "not found"),
    ("report", ["report", "BAD/report_bad"], "report.json"),
    ("profiles", ["profiles", "show", "no-such-device"], "no-such-device"),
    ("profiles", ["profiles", "validate", "BAD/broken.yaml"], "broken.yaml"),
    ("profiles", ["profiles", "validate", "BAD/nan_profile.yaml"], "nan_profile.yaml"),
]


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    return build_inputs(tmp_path_factory.mktemp("bad"))


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts}


def _case_id(case) -> str:
    command, args, _ = case
    return f"{command}:{'_'.join(a.split('/')[-1] for a in args[1:3])}"


def test_the_battery_covers_every_command_with_at_least_60_cases():
    from edgeprune.cli import main

    commands = {c for c, _, _ in CASES}
    assert len({(tuple(a), f) for _, a, f in CASES}) == len(CASES) >= 60
    assert commands >= set(main.commands) - {"bench-remote"}  # bench-remote's rows need sshd: tests/test_remote.py


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad, tmp_path, case):
    from click.testing import CliRunner

    from edgeprune.cli import main

    _, args, fragment = case
    out = tmp_path / "out"
    out.mkdir()
    before = _snapshot(bad)
    result = CliRunner().invoke(main, [a.replace("BAD", str(bad)).replace("OUT", str(out)) for a in args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert fragment in lines[0], lines[0]
    assert list(out.iterdir()) == [] and _snapshot(bad) == before


def test_the_readme_counts_the_battery():
    from collections import Counter

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"is one table of {len(CASES)} cases" in readme
    for command, n in Counter(c for c, _, _ in CASES).items():
        assert f"{command} {n}" in readme, f"README's per-command count for {command} is not {n}"
