"""Shared small models and fixtures. Real runtimes only: nothing here mocks ONNX Runtime or OpenVINO."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.manual_seed(0)
torch.set_num_threads(2)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


class ResidualCNN(nn.Module):
    """Conv + BatchNorm + residual add + pooling + Linear head: the CNN shapes that pruning must handle."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(x.mean(dim=(2, 3)))


class EncoderBlock(nn.Module):
    def __init__(self, d=64, heads=4):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=128, dropout=0.0, batch_first=True)

    def forward(self, x):
        return self.layer(x)


def _randomize_bn(model: nn.Module) -> nn.Module:
    # Fresh BatchNorm is the identity at eval; random statistics make the export check meaningful.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def make_mlp():
    return MLP().eval(), (torch.randn(4, 32),)


def make_cnn():
    return _randomize_bn(ResidualCNN()), (torch.randn(2, 3, 32, 32),)


def make_encoder():
    return EncoderBlock().eval(), (torch.randn(2, 16, 64),)


def one_error_line(result) -> str:
    """A CLI user error: exit code 2, exactly one line starting with 'error: ', no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def runner():
    from click.testing import CliRunner

    return CliRunner()


SMALL_MODELS = {"mlp": make_mlp, "cnn": make_cnn, "encoder": make_encoder}


@pytest.fixture(scope="session")
def minilm():
    from edgeprune.models import load_model

    return load_model("minilm")


@pytest.fixture(scope="session")
def minilm_onnx(tmp_path_factory, minilm):
    from edgeprune.exporter import export

    path = tmp_path_factory.mktemp("minilm") / "minilm.onnx"
    report = export(minilm, None, path)
    return path, report


@pytest.fixture(scope="session")
def cnn_onnx(tmp_path_factory):
    from edgeprune.exporter import export

    model, inputs = make_cnn()
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    export(model, inputs, path, input_names=["image"], dynamic_batch=True)
    return path, model, inputs


def interruptible_popen(cmd, **kwargs):
    """subprocess.Popen whose child takes SIGINT as Ctrl-C. A job started in the background by a non-interactive
    shell (CI runners, `cmd &`) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler:
    the child must start with the default disposition for a signal test to mean anything."""
    import signal
    import subprocess

    return subprocess.Popen(cmd, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def make_target(name: str = "host", runtime: str = "onnxruntime", multiple: int = 8, nm: str = "no",
                reason: str = "runs sparse weights dense", kind: str = "cpu", precisions=("fp32", "fp16", "int8")):
    """A real Target on a small, valid device profile: `runtime` with channel multiple `multiple` and a 2:4 verdict
    `nm` ("yes" | "memory-only" | "no"). name "host" makes it this machine (plans are measured, not estimated)."""
    from edgeprune.targets.profiles import profile_from_text
    from edgeprune.targets.target import Target

    text = f"""
name: {name}
vendor: test
kind: {kind}
description: a test device
runtimes: [{{name: {runtime}, devices: [{"gpu" if kind == "gpu" else "cpu"}]}}]
precisions: [{", ".join(precisions)}]
patterns:
  {runtime}:
    channel: {{multiple: {multiple}, source: test, confidence: D}}
    nm: {{n: 2, m: 4, accelerated: "{nm}", reason: "{reason}", source: test, confidence: D}}
"""
    return Target(profile_from_text(text, "test profile"), runtime)
