"""The training loop shared by block-local reconstruction and end-to-end distillation.

AdamW (weight decay 0) with a 5% linear warm-up and cosine decay, gradient clipping at 1.0 (docs/METHODS.md §9.3).
Each step's randomness comes from (seed, step) alone, so a run resumed from a checkpoint continues exactly as
the uninterrupted run would have. A non-finite loss stops the loop; the caller keeps its best state.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import torch

Say = Callable[[str], None]


@dataclasses.dataclass
class LoopOutcome:
    steps: int
    total: int
    stopped: str  # done | budget | nan | recovered
    last_loss: float
    seconds: float


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def lr_at(step: int, total: int, lr: float) -> float:
    warm = max(1, total // 20)
    if step < warm:
        return lr * (step + 1) / warm
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def _eta(seconds_per_step: float, left: int) -> str:
    s = int(seconds_per_step * left)
    return f"{s // 60}:{s % 60:02d}"


def run_loop(params: Sequence[torch.nn.Parameter], step_loss: Callable[[int], torch.Tensor], *, lr: float,
             budget_s: float, max_steps: int | None, label: str, say: Say, start_step: int = 0,
             total: int | None = None, optimizer_state: dict | None = None,
             on_eval: Callable[[int, int, torch.optim.Optimizer], bool] | None = None, eval_every: int = 0,
             eval_every_s: float = 0.0) -> tuple[LoopOutcome, torch.optim.Optimizer]:
    """Minimise step_loss(step) over `params` until max_steps (or, without it, the step count the first three
    steps' speed fits into budget_s), the time budget, a non-finite loss, or on_eval(...) returning True
    ("recovered"). on_eval(step, total, optimizer) runs every `eval_every` steps (deterministic), or else every
    `eval_every_s` seconds."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if optimizer_state:
        opt.load_state_dict(optimizer_state)
    t0, step, loss_v, stopped = time.perf_counter(), start_step, float("nan"), "done"
    total = total or max_steps
    last_eval = t0
    while True:
        if total is not None and step >= total:
            break
        if max_steps is None and time.perf_counter() - t0 > budget_s:  # fixed steps: deterministic, no clock
            stopped = "budget"
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total or 1000, lr)
        loss = step_loss(step)
        loss_v = float(loss.detach())
        if not math.isfinite(loss_v):
            stopped = "nan"
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        per = (time.perf_counter() - t0) / (step - start_step)
        if total is None and step - start_step >= 3:  # fix the schedule's length from the measured step time
            total = max_steps or max(step + 1, int(budget_s / per))
        if step % 10 == 0 or step == total:
            say(f"{label}: step {step}/{total or '?'}, loss {loss_v:.4f}, ETA {_eta(per, (total or step) - step)}")
        due = step % eval_every == 0 if eval_every else time.perf_counter() - last_eval >= eval_every_s > 0
        if on_eval and due:
            last_eval = time.perf_counter()
            if on_eval(step, total or step, opt):
                stopped = "recovered"
                break
    return LoopOutcome(step, total or step, stopped, loss_v, time.perf_counter() - t0), opt
