"""Transposed convolutions (ConvTranspose1d/2d, groups included) are pruned, scored and compensated.

The compensation cases are built so that an exact refit exists: the conv feeding the transposed conv is linear
(no activation) and half of its output channels are random linear combinations of the others (within each
conv group), so whichever channels go, the kept ones span the same space and the least-squares refit of the
transposed conv's patch matrix (transposed.py) reproduces its output. Without compensation the error is large.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import edgeprune as ep
from edgeprune.errors import PruningError
from edgeprune.pruning import StructuredConfig
from test_partial_pruning import TinyUNet


class Up(nn.Module):
    """conv (linear) -> transposed conv; channels [half:] of each of `groups` blocks of `a` are combinations of
    the block's first half."""

    def __init__(self, groups=1, kernel=2, stride=2, padding=0, dims=2, channels=8):
        super().__init__()
        conv, tconv = (nn.Conv2d, nn.ConvTranspose2d) if dims == 2 else (nn.Conv1d, nn.ConvTranspose1d)
        self.a = conv(3, channels, 3, padding=1)
        self.up = tconv(channels, 6, kernel, stride=stride, padding=padding, groups=groups)
        per, g = channels // groups, torch.Generator().manual_seed(5)
        with torch.no_grad():
            for b in range(groups):
                base, dep = range(b * per, b * per + per // 2), range(b * per + per // 2, (b + 1) * per)
                mix = torch.randn(len(dep), len(base), generator=g)
                self.a.weight[list(dep)] = torch.einsum("db,b...->d...", mix, self.a.weight[list(base)])
                self.a.bias[list(dep)] = mix @ self.a.bias[list(base)]

    def forward(self, x):
        return self.up(self.a(x))


def _rel(model, pruned, x):
    with torch.no_grad():
        return float((pruned(x) - model(x)).norm() / model(x).norm())


@pytest.mark.parametrize("kw", [dict(), dict(kernel=4, stride=2, padding=1), dict(groups=2), dict(dims=1, kernel=3)],
                         ids=["2x2-stride2", "overlapping-4x4", "groups2", "1d"])
def test_transposed_conv_consumer_is_refitted_exactly_when_the_kept_channels_span_the_input(kw):
    torch.manual_seed(0)
    model = Up(**kw).eval()
    x = torch.randn(2, 3, *((12, 12) if kw.get("dims", 2) == 2 else (20,)))
    calib = torch.randn(64, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    errs = {}
    for comp in (True, False):
        pruned = ep.prune(model, (x,), StructuredConfig(ratio=0.5, compensate=comp, damp=1e-9), calib=calib)
        assert pruned.up.in_channels == pruned.a.out_channels == 4 and pruned.up.groups == kw.get("groups", 1)
        errs[comp] = _rel(model, pruned, x)
    assert errs[True] < 1e-4 and errs[False] > 0.2, errs


def test_unet_up_path_is_pruned_on_both_sides_and_exports(tmp_path):
    torch.manual_seed(0)
    model, x = TinyUNet().eval(), torch.randn(2, 3, 32, 32)
    lines = []
    pruned = ep.prune(model, (x,), StructuredConfig(ratio=0.5), progress=lines.append)
    assert not [ln for ln in lines if ln.startswith("left unpruned")]
    assert (pruned.up.in_channels, pruned.up.out_channels) == (16, 8)  # mid's channels in, the skip-cat half out
    assert pruned(x).shape == model(x).shape == (2, 2, 32, 32)
    assert ep.count(pruned, (x,)).macs < 0.4 * ep.count(model, (x,)).macs
    assert ep.export(pruned, (x,), tmp_path / "u.onnx").max_abs_diff <= 1e-4


class GroupedAndDepthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.up = nn.ConvTranspose2d(16, 16, 2, stride=2, groups=4)
        self.dw = nn.ConvTranspose2d(16, 16, 3, padding=1, groups=16)
        self.b = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.b(torch.relu(self.dw(torch.relu(self.up(torch.relu(self.a(x)))))))


def test_grouped_transposed_conv_prunes_uniformly_and_a_depthwise_one_beside_it_is_left_whole(tmp_path):
    torch.manual_seed(0)
    model, x = GroupedAndDepthwise().eval(), torch.randn(1, 3, 8, 8)
    lines = []
    pruned = ep.prune(model, (x,), StructuredConfig(ratio=0.5), progress=lines.append)
    assert [ln.split(":")[1].strip() for ln in lines if ln.startswith("left unpruned")] == ["dw (ConvTranspose2d)"]
    assert pruned.up.in_channels == 8 and pruned.up.weight.shape == (8, 4, 2, 2)  # 2 of 4 per group kept
    assert pruned.dw.in_channels == pruned.dw.out_channels == 16 and pruned(x).shape == (1, 4, 16, 16)
    assert ep.export(pruned, (x,), tmp_path / "g.onnx").max_abs_diff <= 1e-4
    with pytest.raises(PruningError, match=r"layer 'dw' \(ConvTranspose2d\) cannot be pruned: depthwise transposed"):
        ep.prune(model, (x,), StructuredConfig(ratio=0.5, strict=True))
