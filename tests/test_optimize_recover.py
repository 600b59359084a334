"""optimize with the user's data, a held-out metric and recovery: CLI and Python API, on a small real CNN."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import interruptible_popen
from edgeprune.cli import main

HERE = Path(__file__).parent
SPEC = f"{HERE / 'models_for_cli.py'}:cnn_with_inputs"
# roofline latency: no timing in tests; FP32: these tests are about pruning and recovery (auto would ship INT8 off-host)
OFF_HOST = ["--profile", "jetson-orin-nano", "--runtime", "onnxruntime", "--precision", "fp32"]


def _images(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    x += np.linspace(-1, 1, 32, dtype=np.float32)[None, None, :, None] * rng.uniform(0, 2, (n, 3, 1, 1)).astype(np.float32)
    np.save(path, x)
    return path


@pytest.fixture()
def data(tmp_path):
    return {k: _images(tmp_path / f"{k}.npy", n, s) for k, n, s in (("calib", 32, 0), ("train", 64, 1), ("eval", 32, 2))}


def test_optimize_reports_held_out_score_after_each_recovery_stage(tmp_path, data):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["optimize", SPEC, *OFF_HOST, "--speedup", "1.5", "--calib", str(data["calib"]),
                                       "--train", str(data["train"]), "--eval-data", str(data["eval"]), "--metric", "agreement",
                                       "--recover", "distill", "--recover-minutes", "0.15", "--max-drop", "100", "-o", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "report.json").read_text())
    assert doc["metric"] == "agreement" and doc["score_dense"] == 100.0
    assert doc["data"]["eval"]["samples"] == 32 and doc["data"]["train"]["samples"] == 64
    stages = doc["recovery"]["stages"]
    assert [s["stage"] for s in stages][:2] == ["compensation", "bn"] and stages[-1]["stage"] == "distill"
    scores = [s["score"] for s in stages]
    assert scores == sorted(scores)  # a stage that lowered the held-out score is undone
    assert stages[-1]["steps"] > 0 and doc["score"] == pytest.approx(scores[-1])
    assert "Recovery (agreement on held-out data" in (out / "report.html").read_text()
    assert "recovery (agreement on held-out data, dense 100.00): compensation" in result.output
    assert not Path(str(out) + ".recover").exists()  # a finished run leaves nothing to resume


def test_eval_data_overlapping_calib_is_refused(tmp_path, data):
    from conftest import one_error_line

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["optimize", SPEC, *OFF_HOST, "--calib", str(data["calib"]), "--eval-data",
                                       str(data["calib"]), "-o", str(out)])
    line = one_error_line(result)
    assert "eval data" in line and "calib" in line and not out.exists()


def test_unknown_metric_is_refused(tmp_path, data):
    result = CliRunner().invoke(main, ["optimize", SPEC, *OFF_HOST, "--metric", "bleu", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "bleu" in result.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_during_recovery_leaves_no_outdir(tmp_path, data, sig, code, word):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edgeprune.cli", "optimize", SPEC, *OFF_HOST, "--calib", str(data["calib"]),
           "--train", str(data["train"]), "--eval-data", str(data["eval"]), "--recover", "distill",
           "--recover-minutes", "5", "--max-drop", "100", "-o", str(out)]
    proc = interruptible_popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=str(HERE)))
    started = Path(str(out) + ".recover") / "keep.json"  # written when recovery starts
    deadline = time.monotonic() + 240
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started.exists(), proc.communicate()[1][-2000:]
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith(word) and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temp copy left beside it


def test_prune_with_train_data_recovers_and_reports_each_stage(tmp_path, data):
    out = tmp_path / "p.pt2"
    args = ["prune", SPEC, "-o", str(out), "--ratio", "0.5", "--calib", str(data["calib"]), "--train", str(data["train"]),
            "--eval-data", str(data["eval"]), "--recover", "distill", "--recover-minutes", "0.1", "--metric", "agreement"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("recovery (agreement"))
    assert "compensation" in line and "bn" in line and "distill" in line and out.is_file()
    missing = CliRunner().invoke(main, args[:-8] + ["--train", str(data["train"])])
    assert missing.exit_code == 2 and "--train needs --eval-data" in missing.output



def test_nothing_pruned_means_nothing_to_recover():
    """A reduced precision that meets the budget alone leaves nothing pruned: a forced distillation (mode distill)
    is not run (it would spend its minutes fitting the dense model to itself); a pruned model is still recovered."""
    import copy

    import torch
    from torch import nn

    from edgeprune.optimizer.job import Job
    from edgeprune.recover import RecoverConfig

    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    batches = [(torch.randn(16, 8),) for _ in range(2)]
    job = Job(None, batches, batches, ["x"], "mlp", "agreement", lambda m: 90.0, lambda s: 100.0 - s, 100.0, dense,
              "logits", RecoverConfig(mode="distill", steps=3, eval_every_s=1e9), 1.0, {})
    score, report = job.recover(copy.deepcopy(dense), {})
    assert score == 90.0 and report["stopped"] == "nothing pruned"
    assert [(s["stage"], s["steps"]) for s in report["stages"]] == [("compensation", 0)]
    pruned = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    _, report = job.recover(pruned, {"0": 8})
    assert report["stopped"] != "nothing pruned" and report["stages"][-1]["stage"] == "distill"
    assert report["stages"][-1]["steps"] == 3
