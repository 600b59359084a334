"""`as_data`: the one adapter from whatever a caller passes as data to CalibrationData.

Pruning, sparsity, attention sparsity and quantization all call it, then `.batches(...)` / `.calls(...)`,
so a tensor, a tuple of tensors, a dict, a DataLoader, a path or a CalibrationData work the same everywhere.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from edgeprune.data.core import DEFAULT_SAMPLES, CalibrationData
from edgeprune.data.errors import CalibrationError
from edgeprune.data.sources import load, read_iterable


def as_data(obj: Any, example_inputs: Any = None, n: int | None = None, input_names: Sequence[str] | None = None, *,
            labelled: bool = False, seed: int = 0, **load_options: Any) -> CalibrationData:
    """CalibrationData from `obj`:

    - CalibrationData: returned as is (never re-sampled behind the caller's back);
    - a path (str / PathLike): `CalibrationData.load` (images, .txt, .csv, .npy/.npz, .pt), `n` of a seeded
      permutation (None = DEFAULT_SAMPLES); `load_options` (tokenizer=, seq_len=, preprocess=) go to it;
    - a torch tensor / array, a tuple of tensors (one batch of positional inputs), a dict of tensors (keyword
      inputs), or a list / iterable / DataLoader of those: concatenated on dim 0, then `n` of a seeded
      permutation (None = all). labelled=True: the last element of each tuple item is the label tensor;
    - None: `example_inputs` as the data (one batch); both None is an error.
    """
    if isinstance(obj, CalibrationData):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return load(obj, n=DEFAULT_SAMPLES if n is None else n, seed=seed, input_names=input_names, **load_options)
    if load_options:
        raise CalibrationError(f"options {sorted(load_options)} apply to paths only, not to {type(obj).__name__}",
                               hint="tokenize / preprocess in-memory data yourself, or pass a path")
    source = "iterable"
    if obj is None:
        if example_inputs is None:
            raise CalibrationError("no data given and no example inputs to fall back on",
                                   hint="pass calibration samples (a tensor, tuple, dict, DataLoader or path)")
        obj, source, labelled = example_inputs, "example inputs", False
    elif hasattr(obj, "shape") or isinstance(obj, (tuple, dict)):
        source = "tensors"
    return read_iterable(obj, n=n, seed=seed, input_names=input_names, labelled=labelled, source=source)


__all__ = ["as_data"]


def trim_padding(batch: tuple, mask_index: int | None) -> tuple:
    """Cut the trailing all-padding token columns of a batch: every [B, T] input (T = the mask's length) keeps
    its first L columns, L = the longest real sequence in the batch.

    Why it is exact: attention masks padded keys, so real tokens' hidden states do not depend on the padding, and
    mask-aware pooling/perplexity ignore padded positions. Why it matters: Rotten Tomatoes snippets average ~30
    tokens padded to 128, so recovery and scoring on the trimmed batch do ~4x less work."""
    if mask_index is None:
        return batch
    mask = batch[mask_index]
    if mask.dim() != 2:
        return batch
    t = mask.shape[1]
    real = mask.ne(0).any(0).nonzero()
    keep = int(real.max()) + 1 if real.numel() else t
    return tuple(x[:, :keep] if x.dim() == 2 and x.shape[1] == t else x for x in batch)
