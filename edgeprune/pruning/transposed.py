"""Transposed convolutions (ConvTranspose1d/2d: UNet and decoder up-paths) in channel pruning.

Weight layout (C_in, C_out/g, *kernel): the transpose of Conv's (C_out, C_in/g, *kernel).

Where Torch-Pruning holds and where it does not: its ConvPruner knows `transposed` and prunes groups == 1 and
depthwise transposed convs correctly. For 1 < groups < C it slices the wrong dimensions (it keeps the first
block's input indices on dim 0, which holds *all* C_in, and the global output indices on dim 1, which holds
C_out/g), so grouped transposed convs get GroupedTransposePruner below. Torch-Pruning keys custom pruners by
layer type, and ties a layer's input and output channels only through the pruner's function identity, so once
that pruner is registered a *depthwise* transposed conv of the same type can no longer be coupled: it is left
whole (said, not fatal; see `left_whole`).

Matrix view for importance and compensation (METHODS' y = W x + b): every input pixel x_p (C_in/g values of its
block) writes one patch of C_out/g * k outputs, patch_p = M x_p with M = W_b.permute(1, kernel.., 0) reshaped
to (C_out/g * k, C_in/g). The output is the sum of the overlapping patches (col2im). With stride == kernel
(UNet's 2x2, stride-2 upsampling) patches do not overlap and the patch error *is* the output error; with
overlap it is a proxy that bounds it up to the overlap factor. Stats per block: G over input pixels.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d)


def is_transposed(mod: nn.Module) -> bool:
    return isinstance(mod, TRANSPOSED)


def is_grouped(mod: nn.Module) -> bool:
    """1 < groups < channels: the case Torch-Pruning's ConvPruner slices wrongly for transposed convs."""
    return is_transposed(mod) and 1 < mod.groups and not (mod.groups == mod.in_channels == mod.out_channels)


def kernel_numel(mod: nn.Module) -> int:
    return math.prod(mod.kernel_size)


def patch_matrix(mod: nn.Module, ch: slice) -> torch.Tensor:
    """(C_out/g * k, C_in/g) float64 copy of the block reading input channels `ch`; rows (out channel, kernel)."""
    w = mod.weight.detach()[ch]                       # (C_in/g, C_out/g, *kernel)
    return w.flatten(2).permute(1, 2, 0).reshape(-1, w.shape[0]).double()


def set_patch_matrix(mod: nn.Module, ch: slice, m: torch.Tensor) -> None:
    w = mod.weight[ch]
    k = kernel_numel(mod)
    with torch.no_grad():
        mod.weight[ch] = m.reshape(w.shape[1], k, w.shape[0]).permute(2, 0, 1).reshape(w.shape).to(w.dtype)


def row_bias(mod: nn.Module, b: torch.Tensor) -> torch.Tensor:
    """Per-output-channel bias (C_out/g,) as the patch rows' bias (C_out/g * k,)."""
    return b.repeat_interleave(kernel_numel(mod)) if is_transposed(mod) else b


def fold_bias(mod: nn.Module, b_rows: torch.Tensor) -> torch.Tensor:
    """Patch rows' bias back to one per output channel: the mean over the kernel positions, which is the best
    single constant for each channel when the refit is done per patch row (each row sees the same pixels)."""
    return b_rows.reshape(-1, kernel_numel(mod)).mean(1) if is_transposed(mod) else b_rows


def pixel_rows(x: torch.Tensor, ch: slice) -> torch.Tensor:
    """(N, C, *spatial) -> (N * pixels, channels in ch): one row per input pixel."""
    return x[:, ch].movedim(1, -1).reshape(-1, ch.stop - ch.start)


def input_mask(mod: nn.Module, cols: Sequence[int]) -> torch.Tensor:
    """Bool mask of the weight entries that read input channels `cols` (dim 0: every output of its block)."""
    mask = torch.zeros_like(mod.weight, dtype=torch.bool)
    mask[list(cols)] = True
    return mask


def _keep(n: int, idxs: Sequence[int]) -> list[int]:
    return sorted(set(range(n)) - set(int(i) for i in idxs))


def grouped_pruner():
    """A Torch-Pruning pruner for grouped transposed convs; removals are uniform per block (Group.uniform)."""
    import torch_pruning as tp

    class GroupedTransposePruner(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
            keep = _keep(layer.out_channels, idxs)
            per = layer.out_channels // layer.groups
            local = [i for i in keep if i < per]      # block 0's kept slots = the local slots kept in every block
            layer.out_channels = len(keep)
            layer.weight = self._prune_parameter_and_grad(layer.weight, local, 1)
            if layer.bias is not None:
                layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
            return layer

        def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
            keep = _keep(layer.in_channels, idxs)
            layer.in_channels = len(keep)
            layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
            return layer

        def get_out_channels(self, layer):
            return layer.out_channels

        def get_in_channels(self, layer):
            return layer.in_channels

        def get_in_channel_groups(self, layer):
            return layer.groups

        def get_out_channel_groups(self, layer):
            return layer.groups

    return GroupedTransposePruner()


def customized_pruners(model: nn.Module) -> dict[type, object]:
    """{layer type: pruner} for Torch-Pruning's build_dependency: only the types that have a grouped instance."""
    types = {type(m) for m in model.modules() if is_grouped(m)}
    return {t: grouped_pruner() for t in types} if types else {}


def left_whole(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, module, reason) of the depthwise transposed convs that cannot be coupled (see the module doc)."""
    types = {type(m) for m in model.modules() if is_grouped(m)}
    return [(n, m, "depthwise transposed conv in a model that also has grouped ones (Torch-Pruning keys pruners by "
                   "type, so its input and output channels cannot be tied)")
            for n, m in model.named_modules() if type(m) in types and is_transposed(m) and not is_grouped(m)
            and m.groups > 1]
