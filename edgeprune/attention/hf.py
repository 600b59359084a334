"""Hugging Face wiring: a registered attention implementation that runs each layer's SparseAttention.

transformers (>= 4.48) dispatches every BERT-family / GPT-2 attention through ALL_ATTENTION_FUNCTIONS keyed by
config._attn_implementation. We register "edgeprune_sparse" there (with the SDPA boolean mask builder), so the
model's own projections, caches and output layers stay untouched; the function reads the per-layer settings from
`module.sparse_attention` (a SparseAttention child) and falls back to exact dense attention without one.
"""
from __future__ import annotations

import fnmatch

import torch
from torch import nn

from edgeprune.attention.kernel import dense_attention

IMPL = "edgeprune_sparse"


def _key_valid(mask: torch.Tensor | None) -> torch.Tensor | None:
    """[b, 1|h, q, k] bool (True = attend) or additive float mask -> key padding [b, k] bool.

    The last query row sees every real key in both the bidirectional and the causal mask (causal structure is
    rebuilt by the kernel), so it is the key-padding vector."""
    if mask is None:
        return None
    row = mask[:, 0, -1, :]
    return row if row.dtype == torch.bool else row > torch.finfo(row.dtype).min / 2


def attention_forward(module: nn.Module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0, **kwargs):
    """The AttentionInterface signature: q, k, v [b, h, L, d] -> ([b, L, h, d], None)."""
    sparse = getattr(module, "sparse_attention", None)
    causal = bool(getattr(module, "is_causal", False))
    recorder = getattr(module, "_edgeprune_record", None)
    key_valid = _key_valid(attention_mask)
    if recorder is not None:  # calibration capture (eager only, never traced)
        recorder.append((query.detach(), key.detach(), value.detach(),
                         None if key_valid is None else key_valid.detach(), scaling))
    if sparse is None or query.shape[-2] != key.shape[-2]:  # no settings, or cached decoding: exact attention
        kv = key_valid
        out = _dense_offset(query, key, value, kv, causal, scaling) if causal else dense_attention(query, key, value, kv, scale=scaling)
    else:
        out = sparse(query, key, value, key_valid, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def _dense_offset(q, k, v, key_valid, causal, scale):
    """Causal dense attention where the queries are the last q positions of the keys (cached decoding)."""
    Lq, Lk = q.shape[-2], k.shape[-2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q @ k.transpose(-1, -2)) * scale
    qpos = torch.arange(Lq, device=q.device)[:, None] + (Lk - Lq)
    logits = logits.masked_fill(torch.arange(Lk, device=q.device)[None, :] > qpos, -1e30)
    if key_valid is not None:
        logits = logits.masked_fill(~key_valid[:, None, None, :], -1e30)
    return logits.softmax(-1) @ v


def register() -> None:
    """Idempotent: the attention function and its mask builder (SDPA's boolean mask) under IMPL."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(IMPL, attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(IMPL, sdpa_mask)


def is_attention(mod: nn.Module) -> bool:
    """A self-attention module that calls the attention interface: BERT family (query/key/value) or GPT-2 (c_attn)."""
    if not hasattr(mod, "config") or getattr(mod, "is_cross_attention", False):
        return False
    bert = all(hasattr(mod, a) for a in ("query", "key", "value")) and hasattr(mod, "attention_head_size")
    gpt2 = hasattr(mod, "c_attn") and hasattr(mod, "c_proj") and hasattr(mod, "head_dim")
    return bert or gpt2


def attention_modules(model: nn.Module, ignore=()) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules()
            if is_attention(m) and not any(fnmatch.fnmatch(name, pat) for pat in ignore)}


def use_sparse_impl(model: nn.Module) -> None:
    """Switch the model (and every sub-config) to IMPL."""
    register()
    try:
        model.set_attn_implementation(IMPL)
    except Exception:  # older transformers / non-PreTrainedModel wrappers: set the config field directly
        for m in model.modules():
            cfg = getattr(m, "config", None)
            if cfg is not None and hasattr(cfg, "_attn_implementation"):
                cfg._attn_implementation = IMPL
