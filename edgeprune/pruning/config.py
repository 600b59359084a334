"""StructuredConfig: what to prune, how to rank it, and how to restore the outputs afterwards.

Frozen (torchao style): build one, pass it to `edgeprune.prune(model, example_inputs, config, calib)`.
Validation happens here, at construction, so a bad value fails before any model is touched.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from typing import TYPE_CHECKING, Any, Mapping

from edgeprune.errors import ConfigError
from edgeprune.pruning.importance import importance_metric

if TYPE_CHECKING:
    from edgeprune.targets.target import Target

UNITS = ("auto", "channels", "heads", "ffn")
SCOPES = ("local", "global")


@dataclasses.dataclass(frozen=True)
class StructuredConfig:
    """Structured pruning settings.

    ratio       fraction of the units of every prunable group to remove, in [0, 1).
    per_layer   {glob or name: ratio} overriding `ratio` for groups whose name matches (first match wins).
    unit        "channels" (CNN dependency groups), "heads", "ffn" (transformers), or "auto"
                (heads + FFN for Hugging Face BERT/GPT-2/ViT blocks, channels otherwise).
    importance  "numerical" (ΔE of the consumer layer, METHODS §1), "magnitude"/"l2", "l1",
                "wanda" (‖X_j‖·‖W[:, j]‖), "taylor" (needs loss_fn), "random".
    scope       "local" removes `ratio` of every group; "global" ranks all groups' units together
                (scores normalised per group) under the same total budget.
    compensate  least-squares refit of each consumer layer (with bias) on calibration activations.
    round_to    kept widths rounded to a multiple of this (or `target.channel_multiple()`: its runtime on its device).
    ignore      module names or fnmatch globs left untouched (a group touching one is skipped).
    min_keep    fewest units any group keeps; a config that would go below it raises ConfigError.
    strict      False (default): a layer or attention block pruning cannot handle is left whole, with a
                "left unpruned: NAME (TYPE): reason" line, and the rest is pruned; True: it raises PruningError.
    """

    ratio: float = 0.5
    per_layer: Any = None
    unit: str = "auto"
    importance: str = "numerical"
    scope: str = "local"
    compensate: bool = True
    round_to: int | None = None
    target: Target | None = None  # kept widths rounded to its runtime's channel multiple on its device
    ignore: tuple = ()
    min_keep: int = 1
    n_calib: int = 128
    damp: float = 1e-2
    max_rows: int = 32768  # calibration rows (tokens / conv positions) kept per layer, sampled deterministically
    seed: int = 0
    strict: bool = False

    def __post_init__(self):
        if isinstance(self.ignore, str):
            object.__setattr__(self, "ignore", (self.ignore,))
        object.__setattr__(self, "ignore", tuple(self.ignore or ()))
        if isinstance(self.per_layer, Mapping):
            object.__setattr__(self, "per_layer", tuple(self.per_layer.items()))
        elif self.per_layer is not None:
            object.__setattr__(self, "per_layer", tuple(tuple(p) for p in self.per_layer))
        for pattern, r in (self.per_layer or ()) + (("ratio", self.ratio),):
            if not isinstance(r, (int, float)) or not 0.0 <= float(r) < 1.0:
                raise ConfigError(f"pruning ratio {r!r} for '{pattern}' is outside [0, 1)",
                                  hint="use a fraction to remove, e.g. 0.3 (0 keeps the model unchanged)")
        if self.unit not in UNITS:
            raise ConfigError(f"unknown unit '{self.unit}'", hint=f"use one of {', '.join(UNITS)}")
        importance_metric(self.importance)  # a ConfigError listing the registered names
        if self.scope not in SCOPES:
            raise ConfigError(f"unknown scope '{self.scope}'", hint="use 'local' or 'global'")
        if self.round_to is not None and (not isinstance(self.round_to, int) or self.round_to < 1):
            raise ConfigError(f"round_to must be a positive integer, got {self.round_to!r}", hint="e.g. round_to=8")
        if self.target is not None:
            from edgeprune.targets.target import Target

            if not isinstance(self.target, Target):
                raise ConfigError(f"target must be an edgeprune Target, got {type(self.target).__name__}",
                                  hint="pass edgeprune.target(profile_name, runtime=runtime_name)")
        if not isinstance(self.min_keep, int) or self.min_keep < 1:
            raise ConfigError(f"min_keep must be an integer >= 1, got {self.min_keep!r}", hint="e.g. min_keep=1")
        if self.n_calib < 1 or self.max_rows < 16:
            raise ConfigError("n_calib must be >= 1 and max_rows >= 16", hint="defaults: n_calib=128, max_rows=32768")
        if not self.damp > 0:
            raise ConfigError(f"damp must be > 0, got {self.damp}", hint="default 1e-2 (relative to mean(diag G))")

    def ratio_for(self, name: str) -> float:
        for pattern, r in self.per_layer or ():
            if name == pattern or fnmatch.fnmatchcase(name, pattern):
                return float(r)
        return float(self.ratio)

    def ignored(self, name: str) -> bool:
        return any(name == p or fnmatch.fnmatchcase(name, p) or name.startswith(p + ".") for p in self.ignore)

    def multiple(self) -> int:
        """Channel multiple kept widths are rounded to (1 = no rounding)."""
        if self.round_to:
            return int(self.round_to)
        if self.target is not None:
            return self.target.channel_multiple()
        return 1
