"""Layer shapes a pruning group produces at every candidate width are valid runtime layers."""
from __future__ import annotations

import torch
from torch import nn

from edgeprune.optimizer.shapes import group_layers, record_shapes, shapes_at
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

