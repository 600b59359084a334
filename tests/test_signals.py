"""SIGINT and SIGTERM in the middle of quantize, bundle and bench-remote: a real subprocess, a real signal.

Each command is started, the test waits for the file or folder that proves the work is under way (quantize's
temp folder, bundle's temp archive beside the output, the device's work folder), then signals it. It must exit
130 (SIGINT) or 143 (SIGTERM) with one line on stderr, no traceback, and leave no output and no temp file.
(optimize's own signal test, during recovery, is in test_optimize_recover.py.)
"""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import interruptible_popen
from test_remote import bundle, sshd  # noqa: F401  (module fixtures: a real OpenSSH server on 127.0.0.1)

HERE = Path(__file__).resolve().parent
SIGNALS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
BIG = '''
import torch


def big():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 1024)).eval()
    return model, (torch.randn(4, 1024),)
'''


def _start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return interruptible_popen([sys.executable, "-m", "edgeprune", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ, **(env or {})))


def _signal_when(proc: subprocess.Popen, ready, sig, code: int, word: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout  # bounds the wait only; nothing is asserted on time
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready(), proc.communicate()[1][-2000:]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == code, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith(word) and "Traceback" not in err, err[-2000:]
    assert "--resume" not in lines[0]  # only optimize can resume


@pytest.mark.parametrize("sig, code, word", SIGNALS)
def test_signal_during_quantize_leaves_nothing(tmp_path, sig, code, word):
    (tmp_path / "big.py").write_text(BIG)
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32))
    out, tmpdir = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    tmpdir.mkdir()
    proc = _start(["quantize", f"{tmp_path / 'big.py'}:big", "-b", "onnxruntime", "--calib", str(tmp_path / "calib.npy"),
                   "-o", str(out / "q.onnx")], env={"TMPDIR": str(tmpdir)})
    _signal_when(proc, lambda: any(tmpdir.glob("edgeprune-quantize-*")), sig, code, word)
    assert list(out.iterdir()) == [] and list(tmpdir.iterdir()) == []


def _big_onnx(path: Path) -> None:
    """One MatMul with a 64 MiB random weight: random bytes do not compress, so gzip takes seconds."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture(scope="module")
def big_outdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bigout")
    _big_onnx(d / "model.onnx")
    return d


@pytest.mark.parametrize("sig, code, word", SIGNALS)
def test_signal_during_bundle_leaves_nothing(big_outdir, tmp_path, sig, code, word):
    dist = tmp_path / "dist"
    dist.mkdir()
    before = sorted(p.name for p in big_outdir.iterdir())
    proc = _start(["bundle", str(big_outdir), "-o", str(dist / "b.tar.gz")])
    _signal_when(proc, lambda: any(dist.glob(".b.tar.gz.*")), sig, code, word)
    assert list(dist.iterdir()) == [] and sorted(p.name for p in big_outdir.iterdir()) == before


@pytest.mark.parametrize("sig, code, word", SIGNALS)
def test_signal_during_bench_remote_leaves_nothing_here_or_there(sshd, bundle, tmp_path, sig, code, word):
    from test_bundle import write_shim

    py = write_shim(tmp_path)
    out = tmp_path / "outdir"
    out.mkdir()
    before = set(glob.glob("/tmp/edgeprune.*"))
    proc = _start(["bench-remote", sshd["target"], str(bundle), "-i", sshd["key"], "--python", str(py), "--seconds", "60",
                   "--rounds", "2", "-o", str(out)], env={"PYTHONPATH": str(HERE)})
    # the device's work folder holds the runner once the copy is done: the timing is under way
    _signal_when(proc, lambda: any(Path(d, "edgeprune_run.py").exists() for d in set(glob.glob("/tmp/edgeprune.*")) - before),
                 sig, code, word)
    assert list(out.iterdir()) == []
    assert set(glob.glob("/tmp/edgeprune.*")) == before  # the device's work folder was removed too
