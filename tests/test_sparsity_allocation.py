"""Learned (KDE threshold) allocation: meets the global target, differs per layer, beats uniform on a model built to need it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import edgeprune as ep
from edgeprune.sparsity import SparsityConfig


class Deep(nn.Module):
    """Four residual Linear blocks of unequal sensitivity: block 0 has large weights, block 3 a few dominant inputs."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(64, 64), nn.GELU()) for _ in range(4)])
        with torch.no_grad():
            for layer in self.layers:
                layer[0].weight.copy_(torch.randn(64, 64, generator=g) / 8)
            self.layers[0][0].weight.mul_(3)
            self.layers[3][0].weight.mul_(0.1)
            self.layers[3][0].weight[:, :8].mul_(50)

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def _rel_err(a, b):
    return float(((a - b) ** 2).sum() / (a ** 2).sum())


@pytest.mark.parametrize("method, target", [("magnitude", 0.7), ("wanda", 0.5), ("sparsegpt", 0.6)])
def test_learned_allocation_hits_the_global_target(method, target):
    model, x = Deep().eval(), torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    cfg = SparsityConfig(pattern="unstructured", sparsity=target, method=method, allocation="learned", allocation_steps=100)
    out, report = ep.sparsify(model, (x,), cfg, calib=x, return_report=True)
    zeros = sum(int((l[0].weight == 0).sum()) for l in out.layers)
    total = sum(l[0].weight.numel() for l in out.layers)
    assert abs(zeros / total - target) < 0.005  # measured in the weights, not taken from the report
    assert abs(report.allocation["achieved"] - target) < 0.001
    per_layer = [l.sparsity for l in report.layers]
    assert max(per_layer) - min(per_layer) > 0.05 and max(per_layer) <= 0.95 + 1e-6


def test_learned_beats_uniform_at_the_same_global_sparsity():
    model, x = Deep().eval(), torch.randn(128, 64, generator=torch.Generator().manual_seed(2))
    errs = {}
    for allocation in ("uniform", "learned"):
        cfg = SparsityConfig(pattern="unstructured", sparsity=0.7, method="magnitude", allocation=allocation, allocation_steps=150)
        out, report = ep.sparsify(model, (x,), cfg, calib=x, return_report=True)
        assert abs(report.global_sparsity - 0.7) < 0.005
        with torch.no_grad():
            errs[allocation] = _rel_err(model(x), out(x))
    assert errs["learned"] < 0.9 * errs["uniform"], errs
    assert report.allocation["loss_end"] < report.allocation["loss_start"]


def test_learned_block_pattern_keeps_blocks():
    model, x = Deep().eval(), torch.randn(32, 64)
    cfg = SparsityConfig(pattern="block4x4", sparsity=0.5, method="magnitude", allocation="learned", allocation_steps=50)
    out, report = ep.sparsify(model, (x,), cfg, calib=x, return_report=True)
    assert report.pattern_ok and abs(report.global_sparsity - 0.5) < 0.01
