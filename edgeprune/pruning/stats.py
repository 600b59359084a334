"""Calibration statistics of consumer layers: the Gram matrix of each layer's real input.

Matrix view (METHODS notation y = W x + b): Linear W (out, in); GPT-2 Conv1D W = weightᵀ;
Conv1d/2d with g groups -> g blocks, block b: W[rows_b].reshape(out/g, in/g·kh·kw) against the im2col
(F.unfold) input of its in/g channels, columns ordered (channel, kh, kw) like the weight. ConvTranspose:
each input pixel's patch of out/g·k outputs against that pixel's in/g channels (transposed.py).
Per block we keep G = XᵀX (float64, cols×cols), s = Σ rows of X, and n rows: enough for ΔE,
Wanda and the least-squares refit, without storing activations. Rows (tokens or conv positions)
are subsampled deterministically to at most max_rows per layer.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from edgeprune.pruning import transposed
from edgeprune.weights import is_hf_conv1d, linear_weight, set_linear_weight

CONV = (nn.Conv1d, nn.Conv2d)  # im2col convs (transposed ones have their own view)


@dataclasses.dataclass
class BlockStats:
    out: slice           # output rows of the layer this block writes
    ch: slice            # input channels this block reads
    per_ch: int          # matrix columns per input channel (kh*kw for conv, 1 for linear)
    G: torch.Tensor      # (cols, cols) float64
    s: torch.Tensor      # (cols,) float64
    n: int = 0


def blocks(mod: nn.Module) -> list[tuple[slice, slice, int]]:
    if isinstance(mod, CONV + transposed.TRANSPOSED):
        g, o, i = mod.groups, mod.out_channels, mod.in_channels
        k = 1 if transposed.is_transposed(mod) else transposed.kernel_numel(mod)
        return [(slice(b * o // g, (b + 1) * o // g), slice(b * i // g, (b + 1) * i // g), k) for b in range(g)]
    n_in = mod.weight.shape[0] if is_hf_conv1d(mod) else mod.weight.shape[1]
    return [(slice(None), slice(0, n_in), 1)]


def weight_matrix(mod: nn.Module, st: BlockStats) -> torch.Tensor:
    """(rows, cols) float64 copy of the block's weight, cols matching _rows: (C_in, kernel) order for Linear and
    Conv; for a transposed conv, rows = (out channel, kernel position) of a patch, cols = its input channels."""
    if transposed.is_transposed(mod):
        return transposed.patch_matrix(mod, st.ch)
    w = linear_weight(mod)[st.out]
    return w.reshape(w.shape[0], -1).double()


def set_weight_matrix(mod: nn.Module, st: BlockStats, w: torch.Tensor) -> None:
    if transposed.is_transposed(mod):
        transposed.set_patch_matrix(mod, st.ch, w)
    else:
        set_linear_weight(mod, w, rows=st.out)


def ensure_bias(mod: nn.Module) -> torch.Tensor:
    """The layer's bias, created as zeros if absent (compensation needs somewhere to put the mean)."""
    if mod.bias is None:
        n_out = mod.weight.shape[1] if is_hf_conv1d(mod) else getattr(mod, "out_channels", mod.weight.shape[0])
        mod.bias = nn.Parameter(torch.zeros(n_out, dtype=mod.weight.dtype))
    return mod.bias


def _rows(mod: nn.Module, x: torch.Tensor, ch: slice) -> torch.Tensor:
    """The block's input as (rows, cols)."""
    if transposed.is_transposed(mod):
        return transposed.pixel_rows(x, ch)
    if isinstance(mod, CONV):
        pad = mod.padding if not isinstance(mod.padding, str) else _same_padding(mod)
        if mod.padding_mode != "zeros":  # reflect/replicate/circular: pad like the layer does, then unfold
            x, pad = F.pad(x, mod._reversed_padding_repeated_twice, mode=mod.padding_mode), (0,) * len(pad)
        x, kernel, dilation, stride = x[:, ch], mod.kernel_size, mod.dilation, mod.stride
        if isinstance(mod, nn.Conv1d):  # (N, C, L) as (N, C, 1, L): unfold is 2-D only
            x, kernel, dilation, stride = x.unsqueeze(2), (1, *kernel), (1, *dilation), (1, *stride)
            pad = (0, *pad)
        cols = F.unfold(x, kernel, dilation=dilation, padding=pad, stride=stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x[..., ch].reshape(-1, ch.stop - ch.start)


def _same_padding(mod: nn.Module):
    if mod.padding == "valid":
        return (0,) * len(mod.kernel_size)
    return tuple(d * (k - 1) // 2 for k, d in zip(mod.kernel_size, mod.dilation))


def token_mask(batch: tuple) -> torch.Tensor | None:
    """The attention mask of a transformer batch (its 2nd input: an integer [B, T] tensor of 0/1 with a 1 in every
    row), else None. Padded tokens' activations say nothing about the real ones, and on short texts padded to a
    fixed length they are most rows (Rotten Tomatoes snippets: ~75% of 128): compensation fitted to them fits
    padding."""
    if len(batch) < 2 or not torch.is_tensor(batch[1]) or batch[1].dim() != 2 or batch[1].is_floating_point():
        return None
    m = batch[1]
    if m.numel() == 0 or not bool(((m == 0) | (m == 1)).all()) or not bool((m == 1).any(1).all()):
        return None
    return m.bool()


class _Stop(Exception):
    """Raised from a hook once every watched layer has seen its input: the rest of the forward is not needed."""


def capture(model: nn.Module, layers: dict[str, nn.Module], batches: Sequence[tuple], max_rows: int,
            seed: int = 0) -> dict[str, list[BlockStats]]:
    """Run `batches` through `model` and accumulate BlockStats for every layer in `layers` (name -> module); in
    transformer batches only the real (unmasked) tokens count."""
    stats = {name: [BlockStats(o, c, k, None, None) for o, c, k in blocks(mod)] for name, mod in layers.items()}
    per_batch = max(16, max_rows // max(1, len(batches)))
    seen: set[str] = set()
    handles = []
    current: dict[str, torch.Tensor | None] = {"mask": None}

    def make_hook(name):
        def hook(mod, args):
            x = args[0].detach()
            mask = current["mask"]
            if mask is not None and not isinstance(mod, CONV + transposed.TRANSPOSED) and x.dim() == 3 and x.shape[:2] == mask.shape:
                x = x[mask]  # [B, T, C] -> [real tokens, C]: padded positions left out of G, s and n
            gen = torch.Generator().manual_seed(seed + len(seen))
            idx = None
            for st in stats[name]:
                rows = _rows(mod, x, st.ch)
                if idx is None and rows.shape[0] > per_batch:
                    idx = torch.randperm(rows.shape[0], generator=gen)[:per_batch]
                rows = (rows if idx is None else rows[idx]).double()
                if st.G is None:
                    st.G = torch.zeros(rows.shape[1], rows.shape[1], dtype=torch.float64)
                    st.s = torch.zeros(rows.shape[1], dtype=torch.float64)
                st.G += rows.t() @ rows
                st.s += rows.sum(0)
                st.n += rows.shape[0]
            seen.add(name)
            if len(seen) == len(layers):
                raise _Stop
        return hook

    for name, mod in layers.items():
        handles.append(mod.register_forward_pre_hook(make_hook(name)))
    try:
        with torch.no_grad():
            for args in batches:
                seen.clear()
                current["mask"] = token_mask(args)
                try:
                    model(*args)
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()
    missing = [n for n, st in stats.items() if st[0].G is None]
    if missing:
        from edgeprune.errors import PruningError

        raise PruningError(f"layer(s) {', '.join(missing)} never ran on the calibration data",
                           hint=f"add them to ignore=, e.g. ignore=['{missing[0]}']")
    return stats


def unit_columns(units: list[list[int]], st: BlockStats) -> dict[int, torch.Tensor]:
    """unit -> its matrix columns inside this block (units whose features lie outside the block are absent)."""
    out = {}
    for j, feats in enumerate(units):
        cols = [(f - st.ch.start) * st.per_ch + k for f in feats if st.ch.start <= f < st.ch.stop for k in range(st.per_ch)]
        if cols:
            out[j] = torch.tensor(cols, dtype=torch.long)
    return out
