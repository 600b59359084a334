"""AttentionSparsityConfig: what sparse attention keeps, and AttentionSparsityError."""
from __future__ import annotations

import dataclasses

from edgeprune.errors import ConfigError, SparsityError

ALLOCATIONS = ("calibrated", "uniform")


class AttentionSparsityError(SparsityError):
    """An attention layer cannot be made sparse as configured."""


@dataclasses.dataclass(frozen=True)
class AttentionSparsityConfig:
    """Block-sparse attention (METHODS.md §7).

    density: global target of key blocks kept per query block (mean over layers; 1.0 = dense). K = ceil(density*n)
      blocks of n, never fewer than the forced ones (local window + global blocks). Alternatively `top_k`: the forced
      blocks plus top_k blocks chosen by pooled score (then density is not used and every layer gets the same K).
    block_size: tokens per block (queries and keys). window: neighbour blocks on each side always kept (causal:
      only preceding ones). global_tokens: leading tokens (CLS / sink) always kept, rounded up to whole blocks.
    compensate: dropped blocks enter the softmax as their pooled key/value with log(count) mass (True), never (False),
      or "auto": per layer, whichever of the two gives the lower attention-output error on the calibration data
      (without calibration data: True). Why "auto" by default: the pooled value is the block's plain mean, and a
      head that attends to a few particular keys in far blocks gets a wrong value from it; on a byte-level GPT-2
      at 1024 tokens compensation tripled one layer's error (0.26 vs 0.065) while on MiniLM it lowers it.
    allocation: 'calibrated' gives each layer a density from the grid by a greedy error-per-density rule on
      calibration data under the global target (layers that need dense attention keep it); 'uniform' gives
      every layer `density`.
    """

    density: float | None = 0.25
    top_k: int | None = None
    block_size: int = 64
    window: int = 1
    global_tokens: int = 1
    compensate: bool | str = "auto"
    per_head: bool = True
    allocation: str = "calibrated"
    density_grid: tuple[float, ...] = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0)
    calib_samples: int = 8
    ignore: tuple[str, ...] = ()  # fnmatch globs on attention module names kept dense

    def __post_init__(self):
        object.__setattr__(self, "density_grid", tuple(sorted(float(d) for d in self.density_grid)))
        object.__setattr__(self, "ignore", tuple(self.ignore))
        if self.top_k is not None:
            if self.top_k < 0:
                raise ConfigError(f"top_k must be >= 0, got {self.top_k}")
            object.__setattr__(self, "density", None)
        elif self.density is None or not 0.0 < self.density <= 1.0:
            raise ConfigError(f"attention density must be in (0, 1], got {self.density}",
                              hint="e.g. density=0.25 keeps a quarter of the key blocks; 1.0 is dense")
        if self.block_size < 1 or self.window < 0 or self.global_tokens < 0:
            raise ConfigError(f"block_size must be >= 1 and window, global_tokens >= 0 (got {self.block_size}, "
                              f"{self.window}, {self.global_tokens})")
        if self.compensate not in (True, False, "auto"):
            raise ConfigError(f"compensate must be True, False or 'auto', got {self.compensate!r}")
        if self.allocation not in ALLOCATIONS:
            raise ConfigError(f"unknown attention allocation '{self.allocation}'", hint="use calibrated or uniform")
        if not self.density_grid or not all(0.0 < d <= 1.0 for d in self.density_grid):
            raise ConfigError(f"density_grid values must be in (0, 1], got {self.density_grid}")

    @property
    def global_blocks(self) -> int:
        return -(-self.global_tokens // self.block_size)
