"""Graceful partial pruning: what the pruner cannot handle is left whole and said; strict=True restores the error.

Two families it met as a new user would: a UNet (its ConvTranspose2d up-path is pruned now; an affine InstanceNorm2d,
which the pruner does not score, stands in for the layer left whole), and a ViT whose class token and position
embedding are bare nn.Parameters on the module.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import edgeprune as ep
from edgeprune.errors import PruningError
from edgeprune.pruning import StructuredConfig


class TinyUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.down1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.fuse = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.ReLU())  # reads cat(skip, up)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        s = self.down1(x)
        y = self.up(self.mid(self.down2(s)))
        return self.head(self.fuse(torch.cat([s, y], dim=1)))


class NormedUNet(TinyUNet):
    """TinyUNet with an affine InstanceNorm2d in the middle: a torch layer with weights the pruner does not handle."""

    def __init__(self):
        super().__init__()
        self.mid = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.InstanceNorm2d(32, affine=True), nn.ReLU())


class ViTish(nn.Module):
    def __init__(self, d=32, hidden=128, patches=16):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, patches + 1, d) * 0.02)
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)                        # (B, 16, d)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos  # (B, 17, d)
        t = t + self.mlp(self.norm(t))
        return self.head(t[:, 0])


def _prune(model, inputs, **kw):
    lines = []
    pruned = ep.prune(model, inputs, StructuredConfig(ratio=0.5, **kw), progress=lines.append)
    return pruned, [ln for ln in lines if ln.startswith("left unpruned")]


def test_unet_layer_left_whole_the_rest_pruned_and_said(tmp_path):
    torch.manual_seed(0)
    model, x = NormedUNet().eval(), torch.randn(2, 3, 32, 32)
    pruned, left = _prune(model, (x,))
    assert left == ["left unpruned: mid.1 (InstanceNorm2d): not supported by structured channel pruning; "
                    "the channel groups that touch it keep their width"]
    assert pruned(x).shape == model(x).shape == (2, 2, 32, 32)
    assert pruned.mid[0].out_channels == pruned.up.in_channels == 32  # the group through the norm keeps its width
    assert pruned.down1[0].out_channels < 16 and pruned.up.out_channels < 16  # the rest is pruned
    assert ep.count(pruned, (x,)).macs < ep.count(model, (x,)).macs
    assert ep.export(pruned, (x,), tmp_path / "u.onnx").max_abs_diff <= 1e-4


def test_strict_restores_the_error():
    with pytest.raises(PruningError, match=r"layer 'mid.1' \(InstanceNorm2d\) is not supported"):
        ep.prune(NormedUNet().eval(), (torch.randn(1, 3, 32, 32),), StructuredConfig(ratio=0.5, strict=True))


def test_vit_with_bare_class_token_and_position_embedding_prunes(tmp_path):
    torch.manual_seed(0)
    model, x = ViTish().eval(), torch.randn(2, 3, 16, 16)
    pruned, left = _prune(model, (x,))
    assert left == []
    assert pruned.mlp[0].out_features == 64 and pruned(x).shape == (2, 10)
    assert pruned.cls.shape[-1] == pruned.pos.shape[-1] == pruned.patch.out_channels  # pruned together, if at all
    assert ep.count(pruned, (x,)).macs < ep.count(model, (x,)).macs
    assert ep.export(pruned, (x,), tmp_path / "v.onnx").max_abs_diff <= 1e-4


UNET_FILE = '''
import torch
from test_partial_pruning import NormedUNet


def unet():
    torch.manual_seed(0)
    return NormedUNet().eval(), (torch.randn(1, 3, 32, 32),)
'''


def test_cli_prune_prints_what_it_left_and_strict_fails_in_one_line(tmp_path, monkeypatch):
    from pathlib import Path

    from click.testing import CliRunner

    from edgeprune.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    (tmp_path / "unet.py").write_text(UNET_FILE)
    spec = f"{tmp_path / 'unet.py'}:unet"
    ok = CliRunner().invoke(main, ["prune", spec, "--ratio", "0.5", "-o", str(tmp_path / "u.pt2")])
    assert ok.exit_code == 0, ok.output
    assert "left unpruned: mid.1 (InstanceNorm2d)" in ok.output and (tmp_path / "u.pt2").is_file()
    bad = CliRunner().invoke(main, ["prune", spec, "--ratio", "0.5", "--strict", "-o", str(tmp_path / "s.pt2")])
    lines = [ln for ln in bad.output.splitlines() if ln.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "layer 'mid.1' (InstanceNorm2d)" in lines[0], bad.output
    assert not (tmp_path / "s.pt2").exists()


def test_sparsify_leaves_the_3_channel_patch_embedding_dense_and_lists_it():
    from edgeprune.sparsity import SparsityConfig

    torch.manual_seed(0)
    model, x = ViTish().eval(), torch.randn(2, 3, 16, 16)
    out, report = ep.sparsify(model, (x,), SparsityConfig(pattern="2:4", method="magnitude"), return_report=True)
    status = {layer.name: layer.status for layer in report.layers}
    assert status["patch"] == "skipped" and "C_in=3" in next(l.reason for l in report.layers if l.name == "patch")
    assert status["mlp.0"] == status["mlp.2"] == status["head"] == "sparsified"
    assert out(x).shape == (2, 10)
