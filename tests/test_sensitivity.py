"""Per-group output sensitivity: simulated removal is exact and reversible, and the planner's value follows it."""
from __future__ import annotations

import pytest
import torch

from conftest import make_cnn, make_mlp
from pruning_models import make_gpt2
from edgeprune.optimizer.sensitivity import SensitiveOption, group_errors, probe_widths, zeroed_units
from edgeprune.pruning import StructuredConfig, prune
from edgeprune.pruning.apply import choose_units, find_groups


@pytest.mark.parametrize("make", [make_mlp, make_cnn, make_gpt2])
def test_zeroing_units_equals_pruning_them_without_compensation(make):
    n_groups = len(find_groups(make()[0], make()[1], StructuredConfig(unit="auto")))
    assert n_groups >= 1
    for i in range(n_groups):  # every group, incl. residual streams and grouped-conv consumers
        torch.manual_seed(0)
        model, (x,) = make()
        g = find_groups(model, (x,), StructuredConfig(unit="auto"))[i]
        scores = torch.rand(g.n_units, generator=torch.Generator().manual_seed(i))
        drop = choose_units(scores, g.n_units // 2, g.uniform)  # the path pruning takes (same slots per conv group)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        with zeroed_units(g, drop), torch.no_grad():
            simulated = model(x)
        after = dict(model.named_parameters())
        assert all(torch.equal(before[n], after[n]) for n in before)  # weights restored bit for bit
        g.remove(drop)
        with torch.no_grad():
            real = model(x)
        assert real.shape == simulated.shape
        assert (simulated - real).abs().max() < 1e-5, g.name


def test_group_errors_are_zero_at_full_width_and_grow_as_units_go():
    torch.manual_seed(0)
    model, _ = make_cnn()
    x = torch.randn(8, 3, 16, 16)
    groups = find_groups(model, (x,), StructuredConfig(unit="auto"))
    scores = {g.name: [float(i) for i in range(g.n_units)] for g in groups}
    cands = {g.name: list(range(g.n_units, 0, -1)) for g in groups}
    curves = group_errors(model, groups, scores, cands, (x,), lambda out: out)
    for g in groups:
        pts = dict(curves[g.name])
        assert pts[g.n_units] == 0.0
        ks = sorted(pts)
        assert pts[ks[0]] > 0.0  # the narrowest probe changes the output
        assert len(pts) >= 3


def test_probe_widths_spread_over_the_range():
    assert probe_widths(64, [64, 56, 48, 40, 32, 24, 16, 8]) == [48, 32, 16, 8]
    assert probe_widths(8, [8]) == []


def test_sensitive_value_interpolates_and_extrapolates_downwards():
    opt = SensitiveOption("g", 64, tuple(1.0 for _ in range(64)), lambda k: k * 1e-3, step=8, candidates=(64, 48, 32, 16, 8),
                          errors=((64, 0.0), (32, 0.1), (16, 0.3)))
    assert opt.value(64) == pytest.approx(1.0)
    assert opt.value(48) == pytest.approx(0.95)
    assert opt.value(8) == pytest.approx(1.0 - 0.4)  # slope 0.2/16 per unit below the last probe
    assert opt.widths() == [64, 48, 32, 16, 8]
