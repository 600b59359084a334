"""What a recovery may do (RecoverConfig) and what it did (RecoverReport)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from edgeprune.errors import ConfigError

MODES = ("auto", "off", "bn", "distill")


@dataclasses.dataclass(frozen=True)
class RecoverConfig:
    """mode: auto = BN re-estimation where there is BatchNorm, then distillation while the drop exceeds the limit
    (within `minutes`); bn = BN only; distill = BN + distillation even when the score is already back; off.
    minutes: wall-clock budget of the distillation stages, per recovery."""

    mode: str = "auto"
    minutes: float = 2.0
    steps: int | None = None  # fixed distillation steps (deterministic schedule and evaluations); None: fit the minutes
    lr: float = 1e-4  # end-to-end distillation (METHODS.md §9.3)
    block_lr: float = 1e-3  # block-local reconstruction: one block, a local MSE target, so a larger step is stable
    batch_size: int = 16
    temperature: float = 2.0  # KL on logits at T, scaled by T^2 (Hinton et al. 2015)
    feature_weight: float = 1.0  # MSE on the pruned blocks' outputs (normalised by the teacher's variance)
    blockwise: str = "auto"  # auto | on | off: block-local reconstruction before the end-to-end pass
    blockwise_share: float = 0.8  # of the budget, when block-local runs (it moves the score far more per second)
    augment: str = "auto"  # auto (images: crops, flips, jitter, mixup) | off
    bn_train: bool = False  # keep BatchNorm in batch-statistics mode while distilling (off: small batches are noise)
    bn_samples: int = 512
    eval_every_s: float = 20.0
    seed: int = 0
    checkpoint_dir: Path | None = None  # where the resumable checkpoint lives (optimize: OUTDIR.recover)
    resume: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"recover mode '{self.mode}' is not one of {', '.join(MODES)}", hint="e.g. --recover auto")
        if not self.minutes >= 0:
            raise ConfigError(f"recover minutes must be >= 0, got {self.minutes}", hint="e.g. --recover-minutes 2")
        if self.blockwise not in ("auto", "on", "off") or self.augment not in ("auto", "off"):
            raise ConfigError("blockwise must be auto|on|off and augment auto|off", hint="use the defaults")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"recover steps must be >= 1, got {self.steps}", hint="e.g. --recover-steps 200")
        for name in ("lr", "batch_size", "temperature", "eval_every_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"recover {name} must be > 0, got {getattr(self, name)}", hint="use the default")

    @property
    def distills(self) -> bool:
        return self.mode in ("auto", "distill") and (self.minutes > 0 or bool(self.steps))


@dataclasses.dataclass
class StageResult:
    """One stage of recovery: its score on held-out data after it ran, and what it cost."""

    stage: str  # compensation | bn | blockwise | distill
    score: float | None
    seconds: float
    steps: int = 0
    note: str = ""


@dataclasses.dataclass
class RecoverReport:
    stages: list[StageResult] = dataclasses.field(default_factory=list)
    stopped: str = ""  # why recovery ended: recovered | budget | nan | interrupted | off | nothing pruned

    def to_dict(self) -> dict:
        return {"stages": [dataclasses.asdict(s) for s in self.stages], "stopped": self.stopped}
