"""Job: what one optimize run scores with and recovers with, built once from the user's data and metric.

The search loop (run.py) only sees: calibration batches, `score(model)`, `drop(score)` and `recover(pruned, keep)`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from edgeprune.recover import RecoverConfig, RecoverReport, StageResult, recover
from edgeprune.recover.blocks import find_blocks, is_pruned
from edgeprune.recover.distill import DistillSetup

Say = Callable[[str], None]


@dataclasses.dataclass
class Job:
    calib: Any  # CalibrationData
    calib_batches: list[tuple]
    train_batches: list[tuple]
    input_names: list[str]
    model_name: str
    metric_name: str
    score: Callable[[nn.Module], float]  # held-out score of a model (points; perplexity: ppl)
    drop: Callable[[float], float]  # how much worse than dense a score is (>= 0: worse)
    score_dense: float
    dense: nn.Module
    kind: str  # the distillation loss's output kind (recover.losses.KINDS)
    recover_config: RecoverConfig
    max_drop: float
    data_summary: dict[str, Any]
    say: Say = lambda m: None
    workdir: Path | None = None
    resume_keep: dict[str, int] | None = None
    higher_is_better: bool = True  # the metric's direction (perplexity: False)

    def fingerprint(self, keep: dict[str, int]) -> str:
        """What a recovery checkpoint must match to be resumed: model, plan widths, data and recovery setting."""
        cfg = dataclasses.asdict(dataclasses.replace(self.recover_config, checkpoint_dir=None, resume=False, minutes=0))
        text = json.dumps([self.model_name, sorted(keep.items()), self.data_summary, cfg], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def recover(self, pruned: nn.Module, keep: dict[str, int]) -> tuple[float, dict[str, Any]]:
        """Recover `pruned` in place (BN -> verify -> block-local -> distil -> verify); (held-out score, report)."""
        self.say("scoring the pruned model on held-out data")
        score = self.score(pruned)
        config = self.recover_config
        if not is_pruned(self.dense, pruned):
            # nothing was pruned (a reduced precision met the budget alone): there is nothing to recover, and a
            # forced distillation would spend its minutes fitting the dense model to itself
            return score, RecoverReport([StageResult("compensation", score, 0.0, 0, "nothing pruned")],
                                        "nothing pruned").to_dict()
        if config.checkpoint_dir:
            Path(config.checkpoint_dir).mkdir(parents=True, exist_ok=True)
            (Path(config.checkpoint_dir) / "keep.json").write_text(json.dumps(keep))
        mask = self.input_names.index("attention_mask") if "attention_mask" in self.input_names else None
        setup = DistillSetup(self.kind, mask, find_blocks(self.dense, pruned, self.calib_batches[0]))
        report = recover(pruned, self.dense, self.train_batches, setup, config, verify=self.score,
                         is_recovered=lambda s: self.drop(s) <= self.max_drop, score=score, say=self.say,
                         fingerprint=self.fingerprint(keep), higher_is_better=self.higher_is_better)
        self.recover_config = dataclasses.replace(config, resume=False)  # only the first attempt resumes
        return report.stages[-1].score, report.to_dict()


def resume_keep(checkpoint_dir: Path | None) -> dict[str, int] | None:
    """The plan widths an interrupted recovery was working on (written before it started), if any."""
    if checkpoint_dir is None or not (Path(checkpoint_dir) / "keep.json").is_file():
        return None
    keep = json.loads((Path(checkpoint_dir) / "keep.json").read_text())
    return {str(k): int(v) for k, v in keep.items()}
