"""Layer shapes a pruning group produces at every candidate width are valid runtime layers."""
from __future__ import annotations

import torch
from torch import nn

from edgeprune.optimize.shapes import group_layers, record_shapes, shapes_at
from edgeprune.pruning.apply import find_groups
from edgeprune.pruning.config import StructuredConfig


def test_depthwise_producer_shrinks_its_groups_with_its_channels():
    # expand 1x1 -> depthwise 3x3 -> pooled head: the depthwise conv produces the head's input channels
    # (as in EfficientNet's last block); a timed graph with groups != channels would not run
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    x = (torch.randn(1, 3, 16, 16),)
    groups = find_groups(model, x, StructuredConfig(unit="auto"))
    mods = {c.name: c.module for g in groups for c in g.consumers}
    mods.update({p.name: p.module for g in groups for p in g.producers})
    shapes = record_shapes(model, mods, x)
    checked = 0
    for g in groups:
        records = group_layers(g, shapes)
        for removed in range(0, g.n_units, 8):
            for s in shapes_at(records, removed):
                if s.kind == "conv" and s.groups > 1:
                    assert s.n % s.groups == 0 and s.groups == s.n, s
                    checked += 1
    assert checked >= 3


def test_anchors_sit_at_the_budget_in_table_cost():
    # The whole-model anchors are placed where the plan will land (fraction x dense table cost) and at 0.75x
    # that; a cost model proportional to MACs stands in for the measured table.
    from edgeprune.optimize.core import _anchor_fractions, _joint_cost, _uniform_keep

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    x = (torch.randn(4, 64),)
    groups = find_groups(model, x, StructuredConfig(unit="auto"))
    mods = {c.name: c.module for g in groups for c in g.consumers}
    mods.update({p.name: p.module for g in groups for p in g.producers})
    shapes = record_shapes(model, mods, x)
    records = {g.name: group_layers(g, shapes) for g in groups}

    def layer_s(s):
        return 1e-9 * s.m * s.n * s.k

    step_for = lambda g: 1  # noqa: E731
    fixed = 1e-6
    dense = fixed + _joint_cost(groups, records, {}, layer_s)
    for fraction in (0.77, 0.5):
        fractions = _anchor_fractions(groups, records, layer_s, fixed, step_for, fraction)
        assert len(fractions) == 2 and fractions[0] > fractions[1]
        for f, target in zip(fractions, (fraction, 0.75 * fraction)):
            raw = fixed + _joint_cost(groups, records, _uniform_keep(groups, step_for, f), layer_s)
            assert abs(raw / dense - target) < 0.02, (fraction, f, raw / dense)
