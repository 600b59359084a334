"""End-to-end knowledge distillation from the dense model (docs/METHODS.md §9.3), resumable and early-stopping.

Every `eval_every` steps the student is scored on held-out data (`verify`); the best state is kept (in memory
and in the checkpoint) and the loop stops as soon as `is_recovered(score)` holds. A non-finite loss stops it and
the best state is restored. BatchNorm stays in eval mode unless config.bn_train.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch
from torch import nn

from edgeprune.data import trim_padding
from edgeprune.recover import checkpoint
from edgeprune.recover.bn import BN_TYPES
from edgeprune.recover.blocks import capture_outputs, first_tensor
from edgeprune.recover.config import RecoverConfig
from edgeprune.recover.loop import Say, run_loop, step_generator
from edgeprune.recover.losses import augment_images, is_image_batch, normalised_mse, output_loss


@dataclasses.dataclass
class DistillSetup:
    """What the loss needs to know about the model: its output kind (losses.KINDS), which input is the attention
    mask (None: no mask), and the pruned blocks whose outputs get a feature loss."""

    kind: str
    mask_index: int | None = None
    blocks: Sequence[str] = ()


def pool(batches: Sequence[tuple]) -> tuple[torch.Tensor, ...]:
    """Training batches -> one tensor per input, all samples stacked on dim 0."""
    return tuple(torch.cat([b[i] for b in batches]) for i in range(len(batches[0])))


def _set_modes(student: nn.Module, bn_train: bool) -> None:
    student.eval()  # dropout off, BN frozen: batch statistics of 16 crops are noise (METHODS.md §9.1)
    if bn_train:
        for m in student.modules():
            if isinstance(m, BN_TYPES):
                m.train()


def make_step_loss(student, teacher, data: tuple[torch.Tensor, ...], setup: DistillSetup, config: RecoverConfig):
    """step -> loss on a batch drawn (and, for images, augmented) from (seed, step) alone."""
    images = config.augment == "auto" and is_image_batch(tuple(t[:1] for t in data))
    n = data[0].shape[0]

    def step_loss(step: int) -> torch.Tensor:
        gen = step_generator(config.seed, step)
        idx = torch.randint(0, n, (min(config.batch_size, n),), generator=gen)
        inputs = trim_padding(tuple(t[idx] for t in data), setup.mask_index)  # exact, and ~4x less work on short text
        if images:
            inputs = (augment_images(inputs[0], gen),)
        mask = inputs[setup.mask_index] if setup.mask_index is not None else None
        blocks = list(setup.blocks) if config.feature_weight > 0 else []
        with torch.no_grad(), capture_outputs(teacher, blocks) as t_feats:
            t_out = first_tensor(teacher(*inputs))
        with capture_outputs(student, blocks) as s_feats:
            s_out = first_tensor(student(*inputs))
        loss = output_loss(setup.kind, s_out, t_out, config.temperature, mask)
        feats = [normalised_mse(s_feats[b], t_feats[b]) for b in blocks if b in s_feats and s_feats[b].shape == t_feats[b].shape]
        return loss + config.feature_weight * torch.stack(feats).mean() if feats else loss

    return step_loss


def distill(student: nn.Module, teacher: nn.Module, batches: Sequence[tuple], setup: DistillSetup, config: RecoverConfig,
            *, budget_s: float, verify: Callable[[nn.Module], float], is_recovered: Callable[[float], bool],
            score: float, say: Say, fingerprint: str = "", higher_is_better: bool = True) -> dict:
    """Distil `teacher` into `student` in place; returns {steps, stopped, best_score, best_step, seconds, note}."""
    teacher.eval()
    state = checkpoint.load(config.checkpoint_dir, fingerprint) if config.resume and config.checkpoint_dir else None
    best = {"score": score, "step": 0, "state": {k: v.clone() for k, v in student.state_dict().items()}}
    if state:
        student.load_state_dict(state["student"])
        best.update(score=float(state["best_score"]), step=int(state["best_step"]), state=state["best"])
        say(f"resuming recovery at step {state['step']} (best score {best['score']:.2f} at step {best['step']})")
    _set_modes(student, config.bn_train)
    params = [p for p in student.parameters() if p.is_floating_point()]
    max_steps = config.steps
    eval_every = max(1, max_steps // 8) if max_steps else 0

    evaluated = {"step": -1}

    def on_eval(step: int, total: int, opt) -> bool:
        evaluated["step"] = step
        s = verify(student)
        _set_modes(student, config.bn_train)
        if (s > best["score"]) if higher_is_better else (s < best["score"]):
            best.update(score=s, step=step, state={k: v.clone() for k, v in student.state_dict().items()})
        if config.checkpoint_dir:
            checkpoint.save(config.checkpoint_dir, {"fingerprint": fingerprint, "step": step, "total": total,
                                                    "student": student.state_dict(), "best": best["state"],
                                                    "best_score": best["score"], "best_step": best["step"],
                                                    "optim": opt.state_dict()})
        say(f"distilling: step {step}/{total}, held-out score {s:.2f} (best {best['score']:.2f})")
        return is_recovered(s)

    outcome, opt = run_loop(params, make_step_loss(student, teacher, pool(batches), setup, config), lr=config.lr,
                            budget_s=budget_s, max_steps=max_steps, label="distilling", say=say,
                            start_step=int(state["step"]) if state else 0, total=int(state["total"]) if state else None,
                            optimizer_state=state["optim"] if state else None, on_eval=on_eval, eval_every=eval_every,
                            eval_every_s=config.eval_every_s)
    note = ""
    if outcome.stopped == "nan":
        note = (f"loss became non-finite at step {outcome.steps + 1}: stopped, kept the best checkpoint "
                f"(score {best['score']:.2f} at step {best['step']})")
    elif outcome.stopped != "recovered" and outcome.steps != evaluated["step"]:
        on_eval(outcome.steps, outcome.total, opt)  # score the last state too: it may be the best
    student.load_state_dict(best["state"])
    student.eval()
    return {"steps": outcome.steps, "stopped": outcome.stopped, "best_score": best["score"], "best_step": best["step"],
            "seconds": outcome.seconds, "note": note}
