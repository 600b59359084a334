"""OptimizeConfig: everything `edgeprune.optimize` and `edgeprune optimize` can be asked, as one frozen value.

The CLI builds exactly this object from its options, so a Python call and a command line with the same values
do the same thing.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from edgeprune.errors import ConfigError
from edgeprune.metrics.limits import DEFAULT_MAX_DROP
from edgeprune.recover.config import RecoverConfig

if TYPE_CHECKING:
    from edgeprune.targets.target import Target, TargetLike

DEFAULT_SPEEDUP = 1.3


@dataclasses.dataclass(frozen=True)
class OptimizeConfig:
    """Budget (exactly one of speedup / latency_ms / macs_ratio; none given = DEFAULT_SPEEDUP), target, metric, recovery.

    metric: top1 | agreement | perplexity | cosine | neighbours, on held-out eval data; None = by the model's head
    (classifier -> agreement, encoder embeddings -> neighbours, causal LM -> perplexity; see edgeprune.metrics).
    max_drop: the largest drop of that metric accepted, in its unit (points; perplexity: ppl); None = the metric's
    default (DEFAULT_MAX_DROP).
    seed: the run's one seed (sample choice, pruning, recovery); it replaces recover.seed.
    """

    speedup: float | None = None
    latency_ms: float | None = None
    macs_ratio: float | None = None
    profile: TargetLike = "host"  # a Target, a profile name ("host" = this machine), a YAML path or a DeviceProfile
    runtime: str | None = None
    # auto: time the reduced precisions the target's runtime offers beside the dense model and ship the fastest
    # that pays within max_drop (optimizer/precision.py); fp32: none; int8 / fp16: that one, measured and reported
    precision: str = "auto"
    metric: str | None = None
    max_drop: float | None = None
    recover: RecoverConfig = dataclasses.field(default_factory=RecoverConfig)
    importance: str = "numerical"
    allocation: str = "sensitivity"
    attention: Any = "auto"  # auto | off | an AttentionSparsityConfig (forced): block-sparse attention where it pays
    threads: int | None = None
    calib_samples: int = 256  # samples of the calibration data used by compensation and sensitivity
    max_rounds: int = 3
    rounds: int = 20
    iters: int = 100
    max_candidates: int = 24
    seed: int = 0

    def __post_init__(self):
        given = [x for x in (self.speedup, self.latency_ms, self.macs_ratio) if x is not None]
        if not given:
            object.__setattr__(self, "speedup", DEFAULT_SPEEDUP)
        elif len(given) > 1:
            raise ConfigError("give exactly one budget: speedup, latency_ms or macs_ratio", hint="e.g. --speedup 1.5")
        self._check_budget()
        if self.runtime is not None:
            from edgeprune.backends import canonical, names

            if canonical(self.runtime) not in names():
                raise ConfigError(f"unknown runtime '{self.runtime}'", hint=f"use one of {', '.join(names())}")
        from edgeprune.precisions import canonical as canonical_precision

        from edgeprune.quantize import PRECISIONS

        if self.precision != "auto":
            object.__setattr__(self, "precision", canonical_precision(str(self.precision)))
        if self.precision not in ("auto", "fp32", *PRECISIONS):
            raise ConfigError(f"precision must be auto, fp32 or one of {', '.join(PRECISIONS)}, got {self.precision!r}",
                              hint="--precision auto|fp32|" + "|".join(PRECISIONS))
        if self.max_drop is not None and not self.max_drop >= 0:
            raise ConfigError(f"max_drop must be >= 0, got {self.max_drop}", hint="e.g. --max-drop 1.0")
        if isinstance(self.attention, str) and self.attention not in ("auto", "off"):
            raise ConfigError(f"attention must be auto or off, got {self.attention!r}", hint="--sparse-attention auto|off")
        for name in ("calib_samples", "max_rounds", "rounds", "iters", "max_candidates"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}", hint="use the default")
        if self.metric is not None:
            from edgeprune.metrics import get_metric

            get_metric(self.metric)  # an unknown name fails here, listing the known ones

    def target(self) -> Target:
        """The Target this config plans for: `profile` on `runtime` (None: the one the device prefers, see target())."""
        from edgeprune.targets.target import target

        return target(self.profile, self.runtime)

    def _check_budget(self) -> None:
        # `not x > 1` (not `x <= 1`) so that NaN fails too; inf is no budget either
        import math

        s, ms, r = self.speedup, self.latency_ms, self.macs_ratio
        if s is not None and not (s > 1.0 and math.isfinite(s)):
            raise ConfigError(f"speedup must be > 1 and finite, got {s}", hint="e.g. --speedup 1.5")
        if ms is not None and not (ms > 0 and math.isfinite(ms)):
            raise ConfigError(f"latency_ms must be > 0 and finite, got {ms}", hint="e.g. --latency-ms 10")
        if r is not None and not 0 < r < 1:
            raise ConfigError(f"macs_ratio must be in (0, 1), got {r}", hint="e.g. --macs-ratio 0.6")

    def replace(self, **changes) -> "OptimizeConfig":
        return dataclasses.replace(self, **changes)
