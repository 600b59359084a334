"""Block-local reconstruction (docs/METHODS.md §9, "Block-local reconstruction").

For each pruned block b in forward order: feed it the *student's* input (the output of the already-recovered
blocks before it, so errors do not pile up) and train only block b to reproduce the dense block's output.
One step touches one block: about 1/L of an end-to-end step, and it converges in far fewer steps.

Caching is linear in the number of blocks: the dense model runs once with every block's output captured, and
where block b+1 reads block b's output (a transformer's layer stack, a Sequential), the student's inputs to b+1
are computed by running the recovered block b on its cached inputs. Elsewhere they are recomputed from the
model's inputs (one partial forward per block).
"""
from __future__ import annotations

import time
from typing import Sequence

import torch
from torch import nn

from edgeprune.recover.blocks import block_io, capture_outputs, first_tensor
from edgeprune.recover.loop import LoopOutcome, Say, run_loop, step_generator
from edgeprune.recover.losses import normalised_mse

Cached = tuple[tuple, dict]  # (args, kwargs) a block was called with
MASKED = __import__("os").environ.get("EDGEPRUNE_BLOCK_MASK", "1") == "1"  # experiment toggle
CACHE_BYTES = 2 << 30  # dense outputs of every block plus one block's inputs: at most this many bytes
CACHE_SHARE = 0.5  # of a timed budget, the most that building the caches may take (0.25 cached too few snippets
                   # for the default 2-minute MiniLM run: neighbours 69.9 where the uncapped cache reached 71.7)
MIN_BATCHES = 4


def _affordable(teacher: nn.Module, names: list[str], batches: Sequence[tuple], budget_s: float | None) -> list[tuple]:
    """The leading batches whose caches fit CACHE_BYTES (images at 224 px cost ~1 MB a block per sample) and, under
    a timed budget, whose caching takes at most CACHE_SHARE of it.

    Why the time bound: caching costs about three forwards per batch (the dense pass, advancing each block, the
    student's own inputs where blocks do not chain). On MiniLM with 2,744 training snippets and a 1-minute budget,
    the memory bound alone cached ~1,700 of them and spent 143 s without one fitting step."""
    t0 = time.perf_counter()
    with torch.no_grad(), capture_outputs(teacher, names) as store:
        teacher(*batches[0])
        per_batch = sum(t.numel() * t.element_size() for t in store.values())
    forward_s = time.perf_counter() - t0
    per_batch += max(t.numel() * t.element_size() for t in store.values())  # one block's cached inputs
    n = max(1, int(CACHE_BYTES // max(per_batch, 1)))
    if budget_s is not None:  # a fixed-steps run (budget_s None) stays deterministic: memory bound only
        n = min(n, max(MIN_BATCHES, int(CACHE_SHARE * budget_s / max(3 * forward_s, 1e-6))))
    return list(batches[:n])


def _dense_outputs(teacher: nn.Module, names: list[str], batches: Sequence[tuple]) -> dict[str, list[torch.Tensor]]:
    """Every block's dense output, per batch, from one pass of the dense model."""
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    with torch.no_grad(), capture_outputs(teacher, names) as store:
        for b in batches:
            teacher(*b)
            for n in names:
                out[n].append(store[n].detach())
    return out


def _advance(block: nn.Module, inputs: list[Cached]) -> list[Cached]:
    """The next block's inputs when it reads this block's output: (block(args)[0],) + the same extra arguments."""
    with torch.no_grad():
        return [((first_tensor(block(*a, **k)),) + tuple(a[1:]), k) for a, k in inputs]


def _chained(student: nn.Module, name: str, batch: tuple, advanced: Cached) -> bool:
    args, _ = block_io(student, name, batch, "input")
    return bool(args) and torch.is_tensor(args[0]) and args[0].shape == advanced[0][0].shape and \
        torch.allclose(args[0], advanced[0][0], atol=1e-5, rtol=1e-4)


def _real_tokens(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, H] -> [real tokens, H] where a [B, T] attention mask says which tokens are real; else unchanged.

    Why: padded positions' outputs feed nothing downstream (attention and pooling mask them out); fitted, they take
    capacity from the real tokens: on short snippets padded to a shared length they are a large share of rows."""
    if mask is None or out.dim() != 3 or tuple(out.shape[:2]) != tuple(mask.shape):
        return out, target
    return out[mask], target[mask]


def _fit(block: nn.Module, cache: list[Cached], targets: list[torch.Tensor], masks: list[torch.Tensor | None], *,
         lr: float, budget_s: float, seed: int, steps: int | None, label: str, say: Say) -> LoopOutcome:
    params = [p for p in block.parameters() if p.is_floating_point()]
    before = {k: v.clone() for k, v in block.state_dict().items()}

    def step_loss(step: int) -> torch.Tensor:
        j = int(torch.randint(0, len(cache), (1,), generator=step_generator(seed, step)))
        (args, kwargs), target = cache[j], targets[j]
        return normalised_mse(*_real_tokens(first_tensor(block(*args, **kwargs)), target, masks[j]))

    # the inputs are cached and detached: only this block's parameters receive gradients
    outcome, _ = run_loop(params, step_loss, lr=lr, budget_s=budget_s, max_steps=steps, label=label, say=say)
    if outcome.stopped == "nan":
        block.load_state_dict(before)
    return outcome


def reconstruct_blocks(student: nn.Module, teacher: nn.Module, names: list[str], batches: Sequence[tuple], *,
                       lr: float, budget_s: float, seed: int, say: Say, steps: int | None = None,
                       mask_index: int | None = None) -> list[LoopOutcome]:
    """Fit each block of `names` in turn, the remaining budget split evenly; the student stays in eval mode.

    `batches` are the (already augmented, if images) training inputs the caches are built from. Returns one
    LoopOutcome per block; a block whose loss turns non-finite is restored to its state before its fit.
    steps: a fixed number per block (deterministic), else as many as the block's share of the budget allows.
    mask_index: which input is the attention mask; padded tokens are then left out of the loss."""
    mods = dict(student.named_modules())
    student.eval()
    if not names:
        return []
    # caching and advancing count against the budget too: on EfficientNet-Lite0 they took a fifth of it, and a
    # budget that ignored them left end-to-end distillation one step
    deadline = time.perf_counter() + budget_s
    batches = _affordable(teacher, names, batches, None if steps is not None else budget_s)
    targets = _dense_outputs(teacher, names, batches)
    inputs = [block_io(student, names[0], b, "input") for b in batches]
    masks = [b[mask_index].bool() if mask_index is not None and MASKED else None for b in batches]
    outcomes = []
    for i, name in enumerate(names):
        share = max(0.0, deadline - time.perf_counter()) / (len(names) - i)
        outcome = _fit(mods[name], inputs, targets.pop(name), masks, lr=lr, budget_s=share, seed=seed + i,
                       steps=steps, label=f"recovering block {i + 1}/{len(names)} ({name})", say=say)
        outcomes.append(outcome)
        if i + 1 < len(names):
            advanced = _advance(mods[name], inputs)
            chained = _chained(student, names[i + 1], batches[0], advanced[0])
            inputs = advanced if chained else [block_io(student, names[i + 1], b, "input") for b in batches]
    return outcomes
