"""recover(): the staged loop, cheapest first, measuring after each stage and stopping when the metric is back.

compensation (already done by the pruner) -> BN re-estimation -> verify -> block-local reconstruction -> verify
-> end-to-end distillation (evaluating every ~20 s, keeping the best) -> verify. A stage that leaves the held-out
score lower than before it is undone (docs/METHODS.md §9).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from edgeprune.data import trim_padding
from edgeprune.recover import checkpoint
from edgeprune.recover.blockwise import reconstruct_blocks
from edgeprune.recover.bn import has_batchnorm, reestimate_bn
from edgeprune.recover.config import RecoverConfig, RecoverReport, StageResult
from edgeprune.recover.distill import DistillSetup, distill
from edgeprune.recover.loop import Say, step_generator
from edgeprune.recover.losses import augment_images, is_image_batch

# training samples whose block inputs/outputs are cached (fewer where they would pass blockwise.CACHE_BYTES): on
# MiniLM-L6 at 25% pruned, 2 min, 256 samples gave 68.1 held-out 10-NN overlap, 1,024 gave 72.7 (more data, less
# overfitting of each block)
BLOCK_CACHE_SAMPLES = int(__import__("os").environ.get("EDGEPRUNE_BLOCK_CACHE", "2048"))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def worse(score: float, than: float, higher_is_better: bool) -> bool:
    """Whether `score` is worse than `than` for a metric of this direction (perplexity: lower is better)."""
    return score < than if higher_is_better else score > than


def _staged(name: str, student: nn.Module, run: Callable[[], tuple[int, str]], verify, best: float,
            report: RecoverReport, higher_is_better: bool = True) -> float:
    """Run one stage; keep it only if the held-out score did not get worse. Returns the score after it."""
    before, t0 = _state(student), time.perf_counter()
    steps, note = run()
    score = verify(student)
    if worse(score, best, higher_is_better):
        student.load_state_dict(before)
        note = (note + "; " if note else "") + f"undone: score {score:.2f}, worse than {best:.2f} before it"
        score = best
    report.stages.append(StageResult(name, score, time.perf_counter() - t0, steps, note))
    return score


def _block_batches(batches: Sequence[tuple], seed: int, augment: bool, mask_index: int | None) -> list[tuple]:
    """Up to BLOCK_CACHE_SAMPLES training samples in batches (trailing padding trimmed); images get augmented views
    (fixed by seed)."""
    out, n = [], 0
    for i, b in enumerate(batches):
        if n >= BLOCK_CACHE_SAMPLES:
            break
        out.append((augment_images(b[0], step_generator(seed, -1 - i)),) if augment else trim_padding(b, mask_index))
        n += int(b[0].shape[0])
    return out


def _resume_point(student: nn.Module, config: RecoverConfig, fingerprint: str, say: Say) -> tuple[RecoverConfig, float | None, bool]:
    """(config to run with, the held-out score saved at the resume point or None, whether BN and block-local
    reconstruction are already done). An interruption before anything was saved starts over."""
    if not config.resume:
        return config, None, False
    state = checkpoint.peek(config.checkpoint_dir, fingerprint) if config.checkpoint_dir else None
    if state is None:
        say("recovering from the start: the interrupted run had saved nothing to resume")
        return dataclasses.replace(config, resume=False), None, False
    if "step" not in state:  # saved after block-local reconstruction, before distillation began
        student.load_state_dict(state["student"])
        say(f"resuming recovery after block-local reconstruction (score {float(state['best_score']):.2f})")
        return dataclasses.replace(config, resume=False), float(state["best_score"]), True
    return config, None, True  # distillation resumes from its own checkpoint


def recover(student: nn.Module, teacher: nn.Module, batches: Sequence[tuple], setup: DistillSetup, config: RecoverConfig, *,
            verify: Callable[[nn.Module], float], is_recovered: Callable[[float], bool], score: float,
            say: Say = lambda m: None, fingerprint: str = "", higher_is_better: bool = True) -> RecoverReport:
    """Recover `student` in place toward `teacher` on training `batches`; `score` is its held-out score now
    (higher_is_better=False for a metric like perplexity: every comparison of scores follows it)."""
    report = RecoverReport(stages=[StageResult("compensation", score, 0.0)])
    if config.mode == "off":
        report.stopped = "off"
        return report
    torch.manual_seed(config.seed)
    config, saved, early_done = _resume_point(student, config, fingerprint, say)
    score = score if saved is None else saved
    if has_batchnorm(student) and not early_done:
        say("recovering: re-estimating BatchNorm statistics")
        score = _staged("bn", student, lambda: (0, "{layers} BN layers, {samples} samples, mean |shift| {mean_shift:.4f}".format(
            **reestimate_bn(student, batches, config.bn_samples, reference=teacher))), verify, score, report, higher_is_better)
    if config.mode == "bn" or not config.distills or (config.mode == "auto" and is_recovered(score)):
        report.stopped = "recovered" if is_recovered(score) else config.mode
        return report
    budget, t0 = config.minutes * 60.0, time.perf_counter()
    images = config.augment == "auto" and is_image_batch(batches[0])
    use_blocks = config.blockwise == "on" or (config.blockwise == "auto" and len(setup.blocks) >= 2)
    if use_blocks and not early_done:
        say(f"recovering: block-local reconstruction of {len(setup.blocks)} pruned blocks")
        cache = _block_batches(batches, config.seed, images, setup.mask_index)
        score = _staged("blockwise", student, lambda: (sum(o.steps for o in reconstruct_blocks(
            student, teacher, list(setup.blocks), cache, lr=config.block_lr, budget_s=budget * config.blockwise_share,
            seed=config.seed, say=say, steps=config.steps, mask_index=setup.mask_index)), ""), verify, score, report, higher_is_better)
        if config.checkpoint_dir:  # an interruption from here on resumes after this stage
            checkpoint.save(Path(config.checkpoint_dir), {"fingerprint": fingerprint, "student": student.state_dict(),
                                                          "best_score": score})
        if config.mode == "auto" and is_recovered(score):
            report.stopped = "recovered"
            return report
    left = budget - (time.perf_counter() - t0)
    result: dict = {}

    def run_distill() -> tuple[int, str]:
        result.update(distill(student, teacher, batches, setup, config, budget_s=max(left, 1.0), verify=verify,
                              is_recovered=is_recovered if config.mode == "auto" else (lambda s: False), score=score,
                              say=say, fingerprint=fingerprint, higher_is_better=higher_is_better))
        return result["steps"], result["note"]

    score = _staged("distill", student, run_distill, verify, score, report, higher_is_better)
    report.stopped = "nan" if result.get("stopped") == "nan" else ("recovered" if is_recovered(score) else "budget")
    return report
