"""Torch-Pruning (1.6.1) magnitude baseline on Hugging Face BERT and GPT-2: whole attention heads and FFN channels
only, the hidden (residual) width kept, as edgeprune's heads+FFN pruning does.

    pruned, macs, (head_ratio, ffn_ratio) = tp_magnitude_at_macs(model, example_inputs, target_macs, heads=True, ffn=True)

`model` is called positionally on `example_inputs` (edgeprune's HFModelWrapper around a BertModel or a
GPT2LMHeadModel). Torch-Pruning knows neither GPT-2's HF Conv1D nor its fused c_attn (it maps indices through
torch.split only on dim 1; GPT2Attention splits Q|K|V on the last dim, and the pruner fails with an IndexError), so
GPT-2 is pruned in an exactly equivalent form: Conv1D -> nn.Linear, c_attn -> three q/k/v Linears concatenated.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """Replace every transformers Conv1D (y = x @ W + b, W: (in, out)) in place by nn.Linear(in, out); same outputs."""
    from transformers.pytorch_utils import Conv1D

    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, Conv1D):
                w = child.weight.detach()
                lin = nn.Linear(w.shape[0], w.shape[1], bias=child.bias is not None).to(w.dtype)
                with torch.no_grad():
                    lin.weight.copy_(w.t())
                    if child.bias is not None:
                        lin.bias.copy_(child.bias)
                setattr(mod, child_name, lin)
    return model


class FusedQKV(nn.Module):
    """GPT-2's c_attn as three Linear layers, outputs concatenated: the fused Linear's (..., 3 * E) tensor, but with
    separate q/k/v producers for Torch-Pruning."""

    def __init__(self, fused: nn.Linear):
        super().__init__()
        e = fused.out_features // 3
        self.q, self.k, self.v = (nn.Linear(fused.in_features, e, bias=fused.bias is not None) for _ in range(3))
        with torch.no_grad():
            for i, lin in enumerate((self.q, self.k, self.v)):
                lin.weight.copy_(fused.weight[i * e:(i + 1) * e])
                if fused.bias is not None:
                    lin.bias.copy_(fused.bias[i * e:(i + 1) * e])

    def forward(self, x):
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)


def unfuse_gpt2(model: nn.Module) -> nn.Module:
    """In place: Conv1D -> Linear, then every GPT-2 c_attn -> FusedQKV. Same outputs."""
    conv1d_to_linear(model)
    for mod in model.modules():
        if isinstance(getattr(mod, "c_attn", None), nn.Linear) and hasattr(mod, "split_size"):
            mod.c_attn = FusedQKV(mod.c_attn)
    return model


def _blocks(model: nn.Module):
    """[(attention module, [qkv Linear layers], n_heads, FFN up-projection Linear)] of a BERT or GPT-2 model."""
    out = []
    for name, mod in model.named_modules():
        if all(isinstance(getattr(mod, a, None), nn.Linear) for a in ("query", "key", "value")):       # BertSelfAttention
            layer = model.get_submodule(name.rsplit(".attention.self", 1)[0])
            out.append((mod, [mod.query, mod.key, mod.value], mod.num_attention_heads, layer.intermediate.dense))
        elif hasattr(getattr(mod, "attn", None), "split_size") and hasattr(mod, "mlp"):                  # GPT2Block
            c = mod.attn.c_attn
            qkv = [c.q, c.k, c.v] if isinstance(c, FusedQKV) else [c]
            if not isinstance(qkv[0], nn.Linear):
                raise TypeError("GPT-2: convert Conv1D to nn.Linear first (conv1d_to_linear / unfuse_gpt2)")
            out.append((mod.attn, qkv, mod.attn.num_heads, mod.mlp.c_fc))
    if not out:
        raise ValueError("no BERT self-attention or GPT-2 block found")
    return out


def _fix_attention(attn: nn.Module, n_heads: int) -> None:
    """Make the HF attention module's head bookkeeping match its pruned projections."""
    if hasattr(attn, "query"):                                   # BertSelfAttention: views with attention_head_size
        attn.num_attention_heads = n_heads
        attn.all_head_size = attn.query.out_features
        ok = attn.all_head_size == n_heads * attn.attention_head_size
    else:                                                        # GPT2Attention: split(split_size), views with head_dim
        attn.num_heads = n_heads
        attn.split_size = attn.c_attn.q.out_features if isinstance(attn.c_attn, FusedQKV) else attn.c_attn.out_features // 3
        ok = attn.split_size == n_heads * attn.head_dim
    if not ok:
        raise RuntimeError(f"Torch-Pruning's head count {n_heads} does not match the pruned projections")


def tp_prune(model: nn.Module, example_inputs: tuple, head_ratio: float, ffn_ratio: float, unfuse: bool = True) -> nn.Module:
    """A pruned copy: Torch-Pruning MagnitudePruner, GroupMagnitudeImportance(p=2), local (per-layer uniform) ranking,
    removing ceil(head_ratio * heads) whole heads per attention and int(ffn_ratio * width) FFN channels per layer.
    Every layer whose output is the residual stream (attention/FFN output projections, embeddings, LM head, pooler)
    is ignored as a root, so no group but the head and FFN groups is pruned. unfuse=False keeps GPT-2's fused c_attn
    (Torch-Pruning 1.6.1 then raises IndexError)."""
    import torch_pruning as tp

    m = copy.deepcopy(model).eval()
    if any(type(c).__name__ == "Conv1D" for c in m.modules()):
        unfuse_gpt2(m) if unfuse else conv1d_to_linear(m)
    blocks = _blocks(m)
    roots = {id(l) for _, qkv, _, up in blocks for l in (*qkv, up)}
    ignored = [x for x in m.modules() if isinstance(x, (nn.Linear, nn.Embedding)) and id(x) not in roots]
    num_heads = {l: h for _, qkv, h, _ in blocks for l in qkv}
    if any(math.ceil(head_ratio * h) >= h for h in num_heads.values()):  # it would then silently keep every head
        raise ValueError(f"head_ratio {head_ratio} asks Torch-Pruning to remove all heads")
    # Heads go only in a group whose width ratio removes something: attention groups get pruning_ratio = head_ratio
    # (prune_head_dims=False keeps head dims). Fresh channel-group dicts: the default ones are shared across calls.
    pruner = tp.pruner.MagnitudePruner(
        m, example_inputs, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=head_ratio,
        pruning_ratio_dict={up: ffn_ratio for *_, up in blocks}, num_heads=num_heads, prune_num_heads=True,
        prune_head_dims=False, head_pruning_ratio=head_ratio, ignored_layers=ignored,
        in_channel_groups={}, out_channel_groups={}, channel_groups={})
    pruner.step()
    for attn, qkv, _, _ in blocks:
        _fix_attention(attn, pruner.num_heads[qkv[0]])
    return m


def _search(example_inputs, target_macs, make, steps=12):
    """Bisect r in [0, 0.9] (MACs fall as r grows); (model, macs, r) closest to target_macs."""
    import edgeprune as ep

    lo, hi, best = 0.0, 0.9, None
    for _ in range(steps):
        r = (lo + hi) / 2
        try:
            m = make(r)
        except ValueError:                       # all heads asked for: too far
            hi = r
            continue
        macs = ep.count(m, example_inputs).macs
        if best is None or abs(macs - target_macs) < abs(best[1] - target_macs):
            best = (m, macs, r)
        if macs == target_macs:
            return best
        lo, hi = (r, hi) if macs > target_macs else (lo, r)
    return best


def tp_magnitude_at_macs(model, example_inputs, target_macs, heads: bool = True, ffn: bool = True, tol: float = 0.002):
    """Torch-Pruning magnitude pruning of heads and/or FFN channels with its ratio bisected until its MACs match
    target_macs. heads and ffn: one ratio for both (pruning_ratio = head_pruning_ratio); when the whole-head steps
    leave the MACs more than tol x dense MACs off, the FFN ratio alone is bisected again with that head ratio fixed.
    Returns (pruned model, MACs, (head_ratio, ffn_ratio))."""
    import edgeprune as ep

    dense = ep.count(model, example_inputs).macs
    best = _search(example_inputs, target_macs, lambda r: tp_prune(model, example_inputs, r * heads, r * ffn))
    ratios = (best[2] * heads, best[2] * ffn)
    if heads and ffn and abs(best[1] - target_macs) > tol * dense:
        h = best[2]
        again = _search(example_inputs, target_macs, lambda r: tp_prune(model, example_inputs, h, r))
        if abs(again[1] - target_macs) < abs(best[1] - target_macs):
            best, ratios = again, (h, again[2])
    return best[0], best[1], tuple(float(r) for r in ratios)


def ratio_label(ratios) -> str:
    h, f = ratios
    return f"head ratio {h:.3f}, FFN ratio {f:.3f}" if h and f and abs(h - f) > 1e-9 else f"ratio {h or f:.3f}"


def widths(model: nn.Module) -> dict:
    """{'heads': [per layer], 'ffn': [per layer], 'hidden': residual width} of a (TP-pruned) BERT or GPT-2."""
    blocks = _blocks(model)
    emb = next(x for x in model.modules() if isinstance(x, nn.Embedding))
    return {"heads": [h for _, _, h, _ in blocks], "ffn": [up.out_features for *_, up in blocks],
            "hidden": emb.embedding_dim}


def _out_projections(model: nn.Module):
    """Linear layers that read head outputs or FFN channels (attention output + FFN down projections)."""
    names = (".attention.output.dense", ".output.dense", ".attn.c_proj", ".mlp.c_proj")
    return {n: x for n, x in model.named_modules() if isinstance(x, nn.Linear) and n.endswith(names)}


@torch.no_grad()
def masked_reference_diff(dense: nn.Module, pruned: nn.Module, example_inputs: tuple) -> float:
    """Max |pruned - reference| where reference = the dense model with the input columns of every head/FFN output
    projection that the pruned model dropped set to zero (columns matched by value). 0 up to rounding iff
    Torch-Pruning removed whole, consistent heads and channels and the attention bookkeeping is right."""
    ref = conv1d_to_linear(copy.deepcopy(dense)).eval()
    outs = _out_projections(pruned)
    for name, lin in _out_projections(ref).items():
        w, pw = lin.weight, outs[name].weight
        col = {w[:, i].numpy().tobytes(): i for i in range(w.shape[1])}
        kept = [col.get(pw[:, j].numpy().tobytes()) for j in range(pw.shape[1])]
        if None in kept:
            raise RuntimeError(f"{name}: a pruned column matches no dense column")
        drop = torch.ones(w.shape[1], dtype=torch.bool)
        drop[kept] = False
        w[:, drop] = 0
    return float((pruned(*example_inputs) - ref(*example_inputs)).abs().max())
