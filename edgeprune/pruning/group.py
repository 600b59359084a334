"""The unit of structured pruning: a Group of channels (or heads, FFN channels) that disappear together, the
layers that read them (consumers) and write them (producers), and how to remove them."""
from __future__ import annotations

import dataclasses
from typing import Callable

from torch import nn

from edgeprune.pruning import transposed

# Layer types whose channels Torch-Pruning removes correctly (transposed convs: with transposed.py's pruner when
# grouped) and that we can score/compensate.
CONVS = (nn.Conv1d, nn.Conv2d) + transposed.TRANSPOSED


def is_depthwise(mod: nn.Module) -> bool:
    return isinstance(mod, CONVS) and mod.groups > 1 and mod.groups == mod.in_channels


@dataclasses.dataclass
class Consumer:
    """A layer reading the group's units. units[j] = its input-feature indices for unit j
    (channel indices for a Conv2d; for Linear after a flatten, the H*W features of channel j)."""

    name: str
    module: nn.Module
    units: list[list[int]]


@dataclasses.dataclass
class Producer:
    """A layer writing the group's units. rows[j] = its output indices for unit j (for magnitude/Taylor)."""

    name: str
    module: nn.Module
    rows: list[list[int]]


@dataclasses.dataclass
class Group:
    name: str                      # the root layer's name (and the unit kind for transformers)
    kind: str                      # "channels" | "heads" | "ffn"
    n_units: int
    unit_width: int                # features per unit (d_head for heads, 1 otherwise): for round_to
    consumers: list[Consumer]
    producers: list[Producer]
    remove: Callable[[list[int]], None]  # physically delete these unit indices (shapes shrink)
    uniform: int = 1               # grouped conv: remove the same local slots in each of `uniform` blocks
    refresh: Callable[["Group"], None] | None = None  # re-read consumers/producers before this group is pruned
    reorders: bool = False         # passes a transpose/permute Torch-Pruning takes for element-wise (rewire.py)
    members: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (layer, "in"|"out"): probe.py's input

    def half_units(self) -> list[int]:
        """Half the units, the same local slots in each of `uniform` blocks: what the probes remove on a copy."""
        per = self.n_units // self.uniform
        return [b * per + j for b in range(self.uniform) for j in range(per // 2)]
