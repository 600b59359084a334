"""Attention heads and FFN channels of Hugging Face transformer blocks (BERT family, ViT, GPT-2, LLaMA-style).

Recognised by attribute names, not class names, so BERT/RoBERTa/MiniLM/ViT/GPT-2 share one code path:
  heads  query/key/value + sibling output.dense (BERT)    q_proj/k_proj/v_proj/o_proj (ViT, LLaMA)
         c_attn (fused Conv1D, weight (in, 3E)) + c_proj (GPT-2)
  ffn    intermediate.dense + output.dense (BERT)   fc1/fc2 (ViT)   c_fc/c_proj (GPT-2)
         gate_proj/up_proj/down_proj (LLaMA: gate and up lose the same rows)
Removing head h deletes rows h*d..(h+1)*d of Q, K, V and the same input columns of O, then updates the
module attributes the forward pass reads (num_attention_heads / num_heads, all_head_size, split_size).
"""
from __future__ import annotations

import torch
from torch import nn

from edgeprune.errors import PruningError
from edgeprune.pruning.group import Consumer, Group, Producer
from edgeprune.weights import is_hf_conv1d

_HEAD_COUNT_ATTRS = ("num_attention_heads", "num_heads", "n_head", "n_heads")
# (query, key, value, output) attribute names of one attention module, by family:
#   ViT/LLaMA/Swin/SegFormer: o_proj; OPT/GPT-Neo/Whisper/Wav2Vec2/DETR: out_proj; DistilBERT: *_lin; Phi: dense
_QKVO = (("q_proj", "k_proj", "v_proj", "o_proj"), ("q_proj", "k_proj", "v_proj", "out_proj"),
         ("q_lin", "k_lin", "v_lin", "out_lin"), ("q_proj", "k_proj", "v_proj", "dense"))
# (up, down) FFN pairs inside one block (ALBERT's layer holds ffn/ffn_output itself; Wav2Vec2's feed_forward)
_FFN = (("intermediate.dense", "output.dense"), ("fc1", "fc2"), ("c_fc", "c_proj"), ("lin1", "lin2"),
        ("intermediate_dense", "output_dense"), ("ffn", "ffn_output"), ("dense_h_to_4h", "dense_4h_to_h"))



def _keep(n: int, remove: list[int]) -> torch.Tensor:
    gone = set(int(i) for i in remove)
    return torch.tensor([i for i in range(n) if i not in gone], dtype=torch.long)


def keep_outputs(mod: nn.Module, keep: torch.Tensor) -> None:
    """Keep only output features `keep` of a Linear / Conv1D."""
    with torch.no_grad():
        if is_hf_conv1d(mod):
            mod.weight = nn.Parameter(mod.weight.data[:, keep].clone())
            mod.nf = len(keep)
        else:
            mod.weight = nn.Parameter(mod.weight.data[keep].clone())
            mod.out_features = len(keep)
        if mod.bias is not None:
            mod.bias = nn.Parameter(mod.bias.data[keep].clone())


def keep_inputs(mod: nn.Module, keep: torch.Tensor) -> None:
    """Keep only input features `keep` of a Linear / Conv1D."""
    with torch.no_grad():
        if is_hf_conv1d(mod):
            mod.weight = nn.Parameter(mod.weight.data[keep].clone())
            mod.nx = len(keep)
        else:
            mod.weight = nn.Parameter(mod.weight.data[:, keep].clone())
            mod.in_features = len(keep)


def _out_features(mod: nn.Module) -> int:
    return mod.nf if is_hf_conv1d(mod) else mod.out_features


def _sub(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _head_group(model, name, attn, producers, o_name, o_mod, d, heads, out_slices=None) -> Group:
    """Group for `heads` heads of width d; producers[i] = (name, module, offset of Q/K/V inside its outputs)."""

    def remove(idxs, attn=attn, producers=producers, o_mod=o_mod):
        cols = [h * d + c for h in idxs for c in range(d)]
        n_now = int(getattr(attn, "_ep_heads"))
        for _, mod, offsets in producers:
            gone = [off + c for off in offsets for c in cols]
            keep_outputs(mod, _keep(_out_features(mod), gone))
        keep_inputs(o_mod, _keep(n_now * d, cols))
        kept = n_now - len(idxs)
        attn._ep_heads = kept
        for attr in _HEAD_COUNT_ATTRS:
            if isinstance(getattr(attn, attr, None), int):
                setattr(attn, attr, kept)
        for attr in ("all_head_size", "split_size"):
            if isinstance(getattr(attn, attr, None), int):
                setattr(attn, attr, kept * d)
        _head_tables(attn, _keep(n_now, idxs), n_now)

    attn._ep_heads = heads
    units = [[h * d + c for c in range(d)] for h in range(heads)]
    prods = [Producer(pn, pm, [[off + c for off in offs for c in u] for u in units]) for pn, pm, offs in producers]
    return Group(_join(name, "heads"), "heads", heads, d, [Consumer(o_name, o_mod, units)], prods, remove)


def _head_tables(attn: nn.Module, keep: torch.Tensor, n_now: int) -> None:
    """Per-head parameters beside Q/K/V/O: Swin's relative_position_bias_table ((2w-1)^2, heads) loses the same heads
    along its last dim (its forward reshapes with -1, so nothing else changes)."""
    for mod in attn.modules():
        for pname, param in list(mod.named_parameters(recurse=False)):
            if "relative_position" in pname and param.dim() >= 1 and param.shape[-1] == n_now:
                setattr(mod, pname, nn.Parameter(param.data[..., keep].clone()))


def _gqa_group(name: str, attn, heads: int) -> Group:
    """Grouped-query attention (LLaMA, Mistral, Qwen2; docs/METHODS.md §10): unit j = K/V head j with the rep = heads / kv query heads
    that read it, removed together so every query head keeps its K/V and rotary head_dim stays whole. The forward
    reads -1 heads from the shapes and num_key_value_groups (= rep, unchanged), so no attribute needs updating."""
    d = getattr(attn, "head_dim", None) or attn.q_proj.out_features // heads
    kv = attn.k_proj.out_features // d
    if kv * d != attn.k_proj.out_features or heads % kv or heads * d != attn.q_proj.out_features:
        raise PruningError(f"attention '{name}': {heads} query heads do not share {attn.k_proj.out_features // max(d, 1)} "
                           f"K/V heads of width {d} evenly", hint=f"add ignore=['{name}'] or use unit='ffn'")
    rep = heads // kv
    q_units = [[(j * rep + r) * d + c for r in range(rep) for c in range(d)] for j in range(kv)]  # q rows = o cols
    kv_units = [[j * d + c for c in range(d)] for j in range(kv)]

    def remove(idxs, attn=attn):
        n_now = int(attn._ep_kv)
        q_gone = [(j * rep + r) * d + c for j in idxs for r in range(rep) for c in range(d)]
        kv_gone = [j * d + c for j in idxs for c in range(d)]
        keep_outputs(attn.q_proj, _keep(n_now * rep * d, q_gone))
        for proj in (attn.k_proj, attn.v_proj):
            keep_outputs(proj, _keep(n_now * d, kv_gone))
        keep_inputs(attn.o_proj, _keep(n_now * rep * d, q_gone))
        attn._ep_kv = n_now - len(idxs)

    attn._ep_kv = kv
    prods = [Producer(_join(name, "q_proj"), attn.q_proj, q_units), Producer(_join(name, "k_proj"), attn.k_proj, kv_units),
             Producer(_join(name, "v_proj"), attn.v_proj, kv_units)]
    return Group(_join(name, "heads"), "heads", kv, rep * d, [Consumer(_join(name, "o_proj"), attn.o_proj, q_units)], prods,
                 remove)


def _ffn_group(name, ups, down_name, down, mids=()) -> Group:
    """mids: depthwise convs on the hidden channels between up and down (SegFormer's Mix-FFN): they lose the same
    channels, weights and groups alike."""
    n = _out_features(ups[0][1])

    def remove(idxs, ups=ups, down=down):
        keep = _keep(_out_features(ups[0][1]), idxs)
        for _, mod in ups:
            keep_outputs(mod, keep)
        keep_inputs(down, keep)
        for conv in mids:
            with torch.no_grad():
                conv.weight = nn.Parameter(conv.weight.data[keep].clone())
                if conv.bias is not None:
                    conv.bias = nn.Parameter(conv.bias.data[keep].clone())
            conv.in_channels = conv.out_channels = conv.groups = len(keep)

    units = [[j] for j in range(n)]
    return Group(_join(name, "ffn"), "ffn", n, 1, [Consumer(down_name, down, units)],
                 [Producer(un, um, units) for un, um in ups], remove)


def transformer_groups(model: nn.Module, kinds: tuple[str, ...], ignored, strict: bool = True,
                       note=lambda line: None) -> list[Group]:
    """Head and FFN groups of every recognised transformer block, in module order. An attention block that cannot
    be pruned raises when `strict`, else it is left whole and `note` gets one 'left unpruned' line."""
    groups = []
    for name, mod in model.named_modules():
        if ignored(name):
            continue
        if "heads" in kinds:
            try:
                g = _attention(model, name, mod)
            except PruningError as err:
                if strict:
                    raise
                note(f"left unpruned: {name} ({type(mod).__name__}): {err.message}")
                g = None
            if g is not None and not any(ignored(c.name) or ignored(p.name) for c in g.consumers for p in g.producers):
                groups.append(g)
        if "ffn" in kinds:
            g = _ffn(model, name, mod)
            if g is not None and not any(ignored(c.name) or ignored(p.name) for c in g.consumers for p in g.producers):
                groups.append(g)
    return groups


def _attention(model, name, mod) -> Group | None:
    lin = (nn.Linear,)
    for qkv in (("query", "key", "value"), ("query_proj", "key_proj", "value_proj")):  # BERT / DeBERTa / ALBERT
        if all(isinstance(getattr(mod, a, None), lin) for a in qkv):
            return _bert_attention(model, name, mod, qkv)
    for names in _QKVO:                                                                  # ViT, LLaMA, OPT, ...
        if all(isinstance(getattr(mod, a, None), lin) for a in names):
            return _qkvo_attention(name, mod, names)
    if is_hf_conv1d(getattr(mod, "c_attn", None)) and is_hf_conv1d(getattr(mod, "c_proj", None)):     # GPT-2
        if getattr(mod, "is_cross_attention", False):
            raise PruningError(f"cross-attention '{name}' is not supported", hint=f"add ignore=['{name}']")
        heads, e = mod.num_heads, mod.split_size
        d = e // heads
        prods = [(_join(name, "c_attn"), mod.c_attn, [0, e, 2 * e])]  # Q | K | V blocks of the fused output
        group = _head_group(model, name, mod, prods, _join(name, "c_proj"), mod.c_proj, d, heads)
        _fix_fused_offsets(group, mod, d)
        return group
    return None


def _bert_attention(model, name, mod, qkv) -> Group:
    """Q/K/V in the self-attention module, the output projection beside it (output.dense) or in it (ALBERT's dense)."""
    heads = getattr(mod, "num_attention_heads", None)
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    o_name = _join(parent, "output.dense")
    o_mod = _sub(model, o_name)
    if not isinstance(o_mod, nn.Linear) and isinstance(getattr(mod, "dense", None), nn.Linear):
        o_name, o_mod = _join(name, "dense"), mod.dense
    if not isinstance(heads, int) or not isinstance(o_mod, nn.Linear):
        raise PruningError(f"attention '{name}' has no num_attention_heads or no output.dense beside it",
                           hint=f"add ignore=['{name}'] or use unit='ffn'")
    d = getattr(mod, qkv[0]).out_features // heads
    prods = [(_join(name, a), getattr(mod, a), [0]) for a in qkv]
    return _head_group(model, name, mod, prods, o_name, o_mod, d, heads)


def _qkvo_attention(name, mod, names) -> Group:
    q, k, v, o = (getattr(mod, a) for a in names)
    heads = next((getattr(mod, a) for a in _HEAD_COUNT_ATTRS if isinstance(getattr(mod, a, None), int)), None)
    if heads is None and getattr(mod, "config", None) is not None:
        heads = getattr(mod.config, "num_attention_heads", None)
    if not isinstance(heads, int):
        raise PruningError(f"attention '{name}': head count unknown", hint=f"add ignore=['{name}'] or use unit='ffn'")
    if k.out_features != q.out_features:
        if names[3] != "o_proj":
            raise PruningError(f"attention '{name}': grouped K/V with a '{names[3]}' output is not recognised",
                               hint=f"add ignore=['{name}'] or use unit='ffn'")
        return _gqa_group(name, mod, heads)
    if not any(hasattr(mod, a) for a in _HEAD_COUNT_ATTRS):
        mod.num_attention_heads = heads
    d = q.out_features // heads
    prods = [(_join(name, a), getattr(mod, a), [0]) for a in names[:3]]
    return _head_group(None, name, mod, prods, _join(name, names[3]), o, d, heads)


def _fix_fused_offsets(group: Group, attn, d: int) -> None:
    """GPT-2's Q|K|V offsets move as heads go: recompute them from the current head count at removal time."""
    c_attn, c_proj = attn.c_attn, attn.c_proj

    def remove(idxs):
        n_now = attn.num_heads
        e = n_now * d
        cols = [h * d + c for h in idxs for c in range(d)]
        keep_outputs(c_attn, _keep(3 * e, [off + c for off in (0, e, 2 * e) for c in cols]))
        keep_inputs(c_proj, _keep(e, cols))
        attn.num_heads = n_now - len(idxs)
        attn.split_size = attn.num_heads * d
        attn._ep_heads = attn.num_heads

    group.remove = remove


def _ffn(model, name, mod) -> Group | None:
    for up_attr, down_attr in _FFN:
        up, down = _sub(mod, up_attr), _sub(mod, down_attr)
        ok = (isinstance(up, nn.Linear) and isinstance(down, nn.Linear)) or (is_hf_conv1d(up) and is_hf_conv1d(down))
        if ok and _out_features(up) == (down.nx if is_hf_conv1d(down) else down.in_features):
            n = _out_features(up)
            mids = [m for m in mod.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels == n]
            return _ffn_group(name, [(_join(name, up_attr), up)], _join(name, down_attr), down, mids)
    if all(isinstance(getattr(mod, a, None), nn.Linear) for a in ("gate_proj", "up_proj", "down_proj")):
        ups = [(_join(name, a), getattr(mod, a)) for a in ("gate_proj", "up_proj")]
        return _ffn_group(name, ups, _join(name, "down_proj"), mod.down_proj)
    return None


def has_transformer_blocks(model: nn.Module) -> bool:
    def block(name, mod) -> bool:
        try:
            return _attention(model, name, mod) is not None or _ffn(model, name, mod) is not None
        except PruningError:  # an attention block it cannot prune is still a transformer block
            return True

    return any(block(n, m) for n, m in model.named_modules())
