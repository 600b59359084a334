"""Distillation losses and image augmentation (docs/METHODS.md §9.3).

The teacher is the dense model, so no labels are needed. The loss fits the model's use (`kind`):
- logits [B, C]: KL(softmax(t/T) || softmax(s/T)) * T^2 (Hinton et al. 2015);
- lm [B, T, V]: the same KL per token, on the tokens the attention mask keeps;
- embedding [B, T, H]: (1 - cosine) of the mask-aware mean-pooled embedding, plus the hidden states' MSE
  divided by the teacher's variance (so the two terms are on one scale);
- other shapes: normalised MSE.
Feature terms (the pruned blocks' outputs, whose width channel pruning leaves unchanged) add normalised MSE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("logits", "lm", "embedding", "other")


def normalised_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE / Var(teacher): 1.0 means "as far off as predicting the mean"; comparable across layers."""
    return F.mse_loss(student, teacher) / teacher.detach().float().var().clamp_min(1e-8)


def pooled(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[B, T, H] -> [B, H]: mean over the tokens the mask keeps (all tokens without a mask)."""
    if mask is None:
        return hidden.mean(1)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher || student) at temperature T, times T^2; logits on the last dim, averaged over kept positions."""
    t = temperature
    log_s = F.log_softmax(student.float() / t, dim=-1)
    log_t = F.log_softmax(teacher.float() / t, dim=-1)
    per = (log_t.exp() * (log_t - log_s)).sum(-1)  # [B] or [B, T]
    if mask is not None and per.dim() == 2:
        m = mask.to(per.dtype)
        return (per * m).sum() / m.sum().clamp_min(1.0) * t * t
    return per.mean() * t * t


RELATIONAL_WEIGHT = float(__import__("os").environ.get("EDGEPRUNE_REL_W", "0"))


def relational(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """[B, H] embeddings -> MSE between the in-batch cosine-similarity matrices (relational KD, Park et al. 2019).

    Why: nearest neighbours depend on how samples sit relative to each other, which a per-sample cosine of 0.95
    still leaves loose (sentence embeddings share a large common direction; ranks live in what is left)."""
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    return F.mse_loss(s @ s.t(), t @ t.t()) / (t @ t.t()).var().clamp_min(1e-8)


def output_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                mask: torch.Tensor | None) -> torch.Tensor:
    if kind in ("logits", "lm") and student.dim() >= 2:
        return kl(student, teacher, temperature, mask if kind == "lm" else None)
    if kind == "embedding" and student.dim() == 3:
        ps, pt = pooled(student, mask), pooled(teacher, mask)
        loss = (1.0 - F.cosine_similarity(ps, pt, dim=-1)).mean() + normalised_mse(student, teacher)
        return loss + RELATIONAL_WEIGHT * relational(ps, pt) if RELATIONAL_WEIGHT else loss
    return normalised_mse(student, teacher)


def augment_images(x: torch.Tensor, gen: torch.Generator, mix: bool = True) -> torch.Tensor:
    """[B, C, H, W] float -> the same shape: per-sample random resized crop (area 8-100%, aspect 3/4-4/3),
    horizontal flip, brightness/contrast jitter in normalised space, then mixup or cutmix across the batch.

    Why this strong: the recovery data is a few dozen photos; more views of them (not more steps) is what moves
    held-out agreement (a trial on crops of 24 photos plateaued at 39% with logit-only distillation)."""
    b, _, h, w = x.shape
    out = torch.empty_like(x)
    r = torch.rand(b, 6, generator=gen)
    for i in range(b):
        area = 0.08 + 0.92 * float(r[i, 0])
        aspect = float(torch.exp(torch.log(torch.tensor(3 / 4)) + r[i, 1] * (torch.log(torch.tensor(4 / 3)) - torch.log(torch.tensor(3 / 4)))))
        ch = max(8, min(h, int(round((area * h * w / aspect) ** 0.5))))
        cw = max(8, min(w, int(round((area * h * w * aspect) ** 0.5))))
        top, left = int(r[i, 2] * (h - ch + 1)), int(r[i, 3] * (w - cw + 1))
        crop = x[i:i + 1, :, top:top + ch, left:left + cw]
        crop = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
        out[i] = crop[0].flip(-1) if r[i, 4] < 0.5 else crop[0]
    scale = 1.0 + 0.4 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    shift = 0.4 * (torch.rand(b, x.shape[1], 1, 1, generator=gen) - 0.5)
    out = out * scale + shift
    if not mix or b < 2:
        return out
    perm = torch.randperm(b, generator=gen)
    # arcsine (= Beta(0.5, 0.5)) mixing weight from `gen` alone, so a step's views depend on (seed, step) only
    lam = 0.5 * (1.0 + float(torch.cos(torch.pi * torch.rand(1, generator=gen))))
    if float(torch.rand(1, generator=gen)) < 0.5:
        return lam * out + (1 - lam) * out[perm]
    cut = (1 - lam) ** 0.5  # cutmix: a box of area 1 - lam from the permuted sample
    ch, cw = int(h * cut), int(w * cut)
    top, left = int(torch.randint(0, h - ch + 1, (1,), generator=gen)), int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    out = out.clone()
    out[:, :, top:top + ch, left:left + cw] = out[perm][:, :, top:top + ch, left:left + cw]
    return out


def is_image_batch(batch: tuple) -> bool:
    return len(batch) == 1 and batch[0].dim() == 4 and batch[0].is_floating_point() and batch[0].shape[1] in (1, 3)
