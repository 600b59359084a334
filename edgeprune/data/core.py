"""CalibrationData: named arrays with a leading sample dim, optional labels, and the views consumers need.

    data.batches(8)                      tuples of torch tensors in input order (pruning, calibration passes)
    data.calls(len(data))                (args, kwargs) per batch: kwargs when the data came as dicts
    data.minibatches(32, shuffle=True, seed=0)   (inputs, labels) for training loops
    data.feeds(names, batch_size=1)      numpy feed dicts (ONNX Runtime, OpenVINO)
    data.bind(specs)                     checked against a model's inputs: names, order, dims, dtypes

Every array is (N, ...) with the same N; `labels` is (N,) int64 or None. Derived data (take, head, slices,
bind) keep labels, texts, class names and the source files.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from edgeprune.data.errors import CalibrationError
from edgeprune.data.specs import InputSpec, as_specs, bind_arrays, onnx_input_specs

if TYPE_CHECKING:
    from edgeprune.data.images import ImagePreprocess

DEFAULT_SAMPLES = 128
_NUMERIC_KINDS = "biuf"  # bool, signed/unsigned int, float: what torch and the runtimes take

# Readers (sources.py, images.py) register themselves here, so this module imports none of them: they build
# CalibrationData and its constructors call them. edgeprune.data's __init__ imports both, and Python runs a
# package's __init__ before any of its modules, so every reader is registered before a constructor runs.
READERS: dict[str, Callable[..., "CalibrationData"]] = {}


def reader(name: str):
    """Decorator: register a reader under `name` for CalibrationData's constructors."""
    def register(fn):
        READERS[name] = fn
        return fn
    return register


def sample_indices(available: int, n: int | None, seed: int = 0) -> np.ndarray:
    """Deterministic choice of min(n, available) indices, in ascending order (None = all)."""
    if n is not None and n < 1:
        raise CalibrationError(f"the number of samples must be >= 1, got {n}", hint=f"e.g. {DEFAULT_SAMPLES}")
    if n is None or available <= n:
        return np.arange(available)
    return np.sort(np.random.default_rng(seed).permutation(available)[:n])


def check_finite(arrays: Mapping[str, np.ndarray], source: str) -> None:
    """Refuse NaN / Inf in float inputs, naming the source, the first bad sample and the input."""
    for name, arr in arrays.items():
        if arr.dtype.kind != "f":
            continue
        # (N,) one flag per sample: any non-finite value anywhere in that sample
        bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            what = "NaN" if np.isnan(arr[i]).any() else "Inf"
            raise CalibrationError(f"data from {source}: sample {i} of input '{name}' holds {what} "
                                   f"({int(bad.sum())} of {arr.shape[0]} samples are not finite)",
                                   hint="drop or repair those samples: calibration, training and evaluation need finite values")


def _check_arrays(arrays: dict[str, np.ndarray], source: str) -> int:
    """The common sample count of `arrays` (raises on empty, ragged or non-numeric data)."""
    if not arrays or any(a.ndim == 0 or a.shape[0] == 0 for a in arrays.values()):
        raise CalibrationError(f"data from {source} is empty",
                               hint="give at least one sample (a folder of images, a .txt with lines, a .npy/.npz)")
    odd = {k: str(a.dtype) for k, a in arrays.items() if a.dtype.kind not in _NUMERIC_KINDS}
    if odd:
        raise CalibrationError(f"data from {source} holds non-numeric inputs {odd}",
                               hint="give numbers (tokenize text first, decode images to arrays)")
    counts = {k: a.shape[0] for k, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise CalibrationError(f"inputs from {source} have different sample counts {counts}",
                               hint="give every input the same number of samples (dim 0)")
    return next(iter(counts.values()))


def _check_labels(labels: Any, n: int, source: str) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n or (labels.size and labels.dtype.kind not in "iu"):
        raise CalibrationError(f"labels from {source} are {labels.dtype} shaped {tuple(labels.shape)}; "
                               f"expected {n} integer class ids (one per sample)", hint="give one int label per sample")
    return labels.astype(np.int64, copy=False)


class CalibrationData:
    """Samples: ordered name -> array with a leading sample dim (all arrays the same length), plus metadata.

    labels: (N,) int64 class ids or None; class_names: names of those ids (image tree, CSV) or None;
    files: resolved paths of the files the samples were read from; texts: the raw lines of text sources;
    keyword: the samples came as dicts, so a model takes them as keyword arguments (see `calls`).
    """

    def __init__(self, arrays: Mapping[str, Any], source: str = "arrays", *, labels: Any = None,
                 class_names: Sequence[str] | None = None, files: Any = (), texts: Sequence[str] | None = None,
                 keyword: bool = False, check: bool = True):
        arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
        n = _check_arrays(arrays, source)
        if check:  # derived data (subsets, bind) were checked when first built
            check_finite(arrays, source)
        self.arrays = arrays
        self.source = source
        self.labels = _check_labels(labels, n, source)
        self.class_names = list(class_names) if class_names is not None else None
        self.files = frozenset(str(f) for f in files)
        if texts is not None and len(texts) != n:
            raise CalibrationError(f"{source}: {len(texts)} texts for {n} samples", hint="give one text per sample")
        self.texts = list(texts) if texts is not None else None
        self.keyword = keyword

    # -- constructors (readers live in edgeprune.data.sources / images) -----------------------
    @classmethod
    def load(cls, source: Any, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0, preprocess: ImagePreprocess | None = None,
             tokenizer: Any = None, seq_len: int = 128, input_names: Sequence[str] | None = None) -> "CalibrationData":
        """Folder of images (flat, or one subfolder per class), .txt, .csv (text,label), .npy/.npz, .pt, or an iterable."""
        return READERS["load"](source, n=n, seed=seed, preprocess=preprocess, tokenizer=tokenizer, seq_len=seq_len, input_names=input_names)

    @classmethod
    def from_images(cls, folder: str | os.PathLike, preprocess: ImagePreprocess, *, n: int | None = DEFAULT_SAMPLES,
                    seed: int = 0, input_name: str = "input") -> "CalibrationData":
        return READERS["read_image_folder"](folder, preprocess, n=n, seed=seed, input_name=input_name)

    @classmethod
    def from_text(cls, path: str | os.PathLike, tokenizer: Any, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0,
                  seq_len: int = 128) -> "CalibrationData":
        return READERS["read_text"](path, tokenizer, n=n, seed=seed, seq_len=seq_len)

    @classmethod
    def from_texts(cls, texts: Sequence[str], tokenizer: Any, *, labels: Any = None, class_names: Sequence[str] | None = None,
                   seq_len: int = 128, source: str = "texts", input_names: Sequence[str] | None = None) -> "CalibrationData":
        """In-memory texts, tokenized (all of them, in order); input_names keeps and orders the tokenizer outputs."""
        return READERS["read_texts"](texts, tokenizer, labels=labels, class_names=class_names, seq_len=seq_len, source=source,
                          input_names=input_names)

    @classmethod
    def from_csv(cls, path: str | os.PathLike, tokenizer: Any, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0,
                 seq_len: int = 128) -> "CalibrationData":
        return READERS["read_csv"](path, tokenizer, n=n, seed=seed, seq_len=seq_len)

    @classmethod
    def from_numpy(cls, path: str | os.PathLike, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0,
                   input_names: Sequence[str] | None = None) -> "CalibrationData":
        return READERS["read_numpy"](path, n=n, seed=seed, input_names=input_names)

    @classmethod
    def from_iterable(cls, items: Any, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0,
                      input_names: Sequence[str] | None = None, labelled: bool = False) -> "CalibrationData":
        """Items are batches (leading batch dim): tensors/arrays, tuples of them (positional inputs), or dicts.
        labelled=True: the last element of each tuple (or the 'labels' key of a dict) is the label tensor."""
        return READERS["read_iterable"](items, n=n, seed=seed, input_names=input_names, labelled=labelled)

    # -- views ----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self.arrays)

    def __len__(self) -> int:
        return next(iter(self.arrays.values())).shape[0]

    def __iter__(self) -> Iterator[tuple]:
        """One tuple of torch tensors per sample (batch dim 1)."""
        return iter(self.batches(1))

    def __getitem__(self, index: slice | Sequence[int] | np.ndarray) -> "CalibrationData":
        """A subset: data[2:10] or data[[0, 5, 7]] (labels, texts and metadata follow)."""
        if isinstance(index, (int, np.integer)):
            raise TypeError("index CalibrationData with a slice or a list of indices (data[i:i+1] for one sample)")
        idx = np.arange(len(self))[index]
        return self._subset(idx, self.source)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{tuple(v.shape[1:])}:{v.dtype}" for k, v in self.arrays.items())
        labels = f", {len(set(self.labels.tolist()))} classes labelled" if self.labels is not None else ""
        return f"CalibrationData({len(self)} samples from {self.source}: {shapes}{labels})"

    def _subset(self, idx: np.ndarray, source: str) -> "CalibrationData":
        return self._derive({k: v[idx] for k, v in self.arrays.items()}, source,
                            labels=self.labels[idx] if self.labels is not None else None,
                            texts=[self.texts[i] for i in idx] if self.texts is not None else None)

    def _derive(self, arrays: dict[str, np.ndarray], source: str, *, labels: Any, texts: list[str] | None) -> "CalibrationData":
        return CalibrationData(arrays, source, labels=labels, class_names=self.class_names, files=self.files, texts=texts,
                               keyword=self.keyword, check=False)

    def take(self, n: int | None, seed: int = 0) -> "CalibrationData":
        """A deterministic sample of n (the first n of a seeded permutation, kept in order); self when n covers all."""
        idx = sample_indices(len(self), n, seed)
        if len(idx) == len(self):
            return self
        return self._subset(idx, f"{self.source} ({len(idx)} sampled)")

    def head(self, n: int) -> "CalibrationData":
        """The first n samples (self when there are no more)."""
        return self if n >= len(self) else self._subset(np.arange(n), self.source)

    # -- batches ------------------------------------------------------------------------------
    def _chunks(self, batch_size: int, drop_last: bool) -> Iterator[slice]:
        if batch_size < 1:
            raise CalibrationError(f"batch size must be >= 1, got {batch_size}", hint="e.g. 1 or 8")
        stop = len(self) - batch_size + 1 if drop_last else len(self)  # drop_last: static batch dims
        for start in range(0, max(stop, 0), batch_size):
            yield slice(start, start + batch_size)

    def _names(self, input_names: Sequence[str] | None) -> list[str]:
        names = list(input_names or self.names)
        missing = [n for n in names if n not in self.arrays]
        if missing:
            raise CalibrationError(f"data from {self.source} has no input(s) {missing}; it holds {self.names}",
                                   hint="bind the data to the model first (CalibrationData.bind)")
        return names

    def feeds(self, input_names: Sequence[str] | None = None, batch_size: int = 1) -> list[dict[str, np.ndarray]]:
        """numpy feed dicts, `batch_size` samples each (a trailing partial batch is dropped)."""
        names = self._names(input_names)
        if len(self) < batch_size:
            raise CalibrationError(f"{len(self)} samples from {self.source} cannot fill one batch of {batch_size}",
                                   hint=f"give at least {batch_size} samples")
        return [{n: np.ascontiguousarray(self.arrays[n][s]) for n in names} for s in self._chunks(batch_size, True)]

    def batches(self, batch_size: int = 1, input_names: Sequence[str] | None = None, *, drop_last: bool = True,
                device: Any = None) -> list[tuple]:
        """Tuples of torch tensors in input order, `batch_size` samples each (on `device` when given).
        drop_last=False keeps a trailing partial batch (every sample is used)."""
        names = self._names(input_names)
        if drop_last and len(self) < batch_size:
            raise CalibrationError(f"{len(self)} samples from {self.source} cannot fill one batch of {batch_size}",
                                   hint=f"give at least {batch_size} samples, or a smaller batch")
        return [tuple(_tensor(self.arrays[n][s], device) for n in names) for s in self._chunks(batch_size, drop_last)]

    def calls(self, batch_size: int | None = None, *, device: Any = None) -> list[tuple[tuple, dict]]:
        """(args, kwargs) per batch of `batch_size` (None = all samples in one), every sample used:
        keyword data (built from dicts, e.g. a tokenizer's output for a HF model) -> ((), {name: tensor}),
        positional data -> ((tensors...), {})."""
        out = []
        for batch in self.batches(batch_size or len(self), drop_last=False, device=device):
            out.append(((), dict(zip(self.names, batch))) if self.keyword else (batch, {}))
        return out

    def minibatches(self, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool = True,
                    input_names: Sequence[str] | None = None, device: Any = None) -> Iterator[tuple[tuple, Any]]:
        """(inputs tuple, labels tensor or None) per minibatch for a training loop; the order is a
        permutation drawn from `seed` when shuffle=True (same seed, same order), else the stored order."""
        import torch

        names = self._names(input_names)
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        for s in self._chunks(batch_size, drop_last):
            idx = order[s]
            inputs = tuple(_tensor(self.arrays[n][idx], device) for n in names)
            labels = torch.from_numpy(self.labels[idx]).to(device) if self.labels is not None else None
            yield inputs, labels

    def as_onnx_reader(self, input_names: Sequence[str] | None = None, batch_size: int = 1):
        """An onnxruntime.quantization.CalibrationDataReader over `feeds` (restartable with rewind())."""
        from onnxruntime.quantization import CalibrationDataReader

        feeds = self.feeds(input_names, batch_size)

        class _Reader(CalibrationDataReader):
            def __init__(self):
                self._it = iter(feeds)

            def get_next(self):
                return next(self._it, None)

            def rewind(self):
                self._it = iter(feeds)

            def __len__(self):
                return len(feeds)

        return _Reader()

    # -- checking against a model -------------------------------------------------------------
    def bind(self, specs: Sequence[Any] | str | os.PathLike) -> "CalibrationData":
        """A copy named, ordered and typed like the model's inputs (`specs`, or an .onnx path).

        Names match by name, else by position when the counts agree. Static dims must match (dim 0 is
        the batch and is free); floats cast to float and ints to int silently, float <-> int is an error.
        """
        if isinstance(specs, (str, os.PathLike)):
            specs = onnx_input_specs(specs)
        arrays = bind_arrays(self.arrays, as_specs(specs), self.source)
        return self._derive(arrays, self.source, labels=self.labels, texts=self.texts)


def _tensor(arr: np.ndarray, device: Any):
    """A torch tensor sharing `arr`'s memory (copied only when moved to another device)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.to(device) if device is not None else t


__all__ = ["CalibrationData", "CalibrationError", "ImagePreprocess", "InputSpec", "DEFAULT_SAMPLES", "sample_indices",
           "check_finite"]
