"""Readers: text (.txt, one sample a line), CSV (text,label), numpy (.npy / .npz), torch.save'd tensors (.pt),
and Python iterables / DataLoaders; `load` picks one from the source (image folders: edgeprune.data.images).

Text is tokenized with the model's tokenizer, padded to a fixed length (static-shape exports and NPUs need
it, and batches then stack without ragged dims). Every reader samples `n` of a seeded permutation.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edgeprune.data.core import DEFAULT_SAMPLES, CalibrationData, reader, sample_indices
from edgeprune.data.errors import CalibrationError
from edgeprune.data.images import ImagePreprocess, read_images

SUFFIXES = ".txt, .csv, .npy, .npz, .pt or a folder of images"


@reader("load")
def load(source: Any, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0, preprocess: ImagePreprocess | None = None,
         tokenizer: Any = None, seq_len: int = 128, input_names: Sequence[str] | None = None) -> CalibrationData:
    """Dispatch on the source: folder of images (flat or class tree), .txt, .csv, .npy/.npz, .pt, or an iterable."""
    if isinstance(source, CalibrationData):
        return source  # already sampled by whoever built it: never re-sample behind the caller's back
    if not isinstance(source, (str, os.PathLike)):
        return read_iterable(source, n=n, seed=seed, input_names=input_names)
    path = Path(source)
    if path.is_dir():
        return read_images(path, preprocess or ImagePreprocess(), n=n, seed=seed, input_name=(input_names or ["input"])[0])
    if not path.is_file():
        raise CalibrationError(f"data not found: {path}", hint=f"give a {SUFFIXES}")
    suffix = path.suffix.lower()
    if suffix in (".txt", ".csv"):
        if tokenizer is None:
            raise CalibrationError(f"{path} is text: it needs the model's tokenizer",
                                   hint="pass tokenizer= (a Hugging Face folder or tokenizer object)")
        reader = read_text if suffix == ".txt" else read_csv
        return reader(path, tokenizer, n=n, seed=seed, seq_len=seq_len)
    if suffix in (".npy", ".npz"):
        return read_numpy(path, n=n, seed=seed, input_names=input_names)
    if suffix in (".pt", ".pth"):
        return read_torch(path, n=n, seed=seed, input_names=input_names)
    raise CalibrationError(f"cannot read data from {path.name}", hint=f"use a {SUFFIXES}")


# -- text -------------------------------------------------------------------------------------

def load_tokenizer(tokenizer: Any):
    """A tokenizer object as is, or AutoTokenizer from a local Hugging Face folder (no network)."""
    if not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    try:
        from transformers import AutoTokenizer
    except ImportError as err:
        raise CalibrationError("text data needs transformers", hint="pip install 'edgeprune[hf]'") from err
    try:
        return AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    except (OSError, ValueError) as err:
        raise CalibrationError(f"no tokenizer in {tokenizer}: {err}", hint="point at the model's Hugging Face folder") from err


def tokenize(texts: list[str], tokenizer: Any, seq_len: int) -> dict[str, np.ndarray]:
    """name -> (len(texts), seq_len) int64, padded/truncated to seq_len."""
    enc = load_tokenizer(tokenizer)(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}


@reader("read_text")
def read_text(path: str | os.PathLike, tokenizer: Any, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0,
              seq_len: int = 128) -> CalibrationData:
    """One sample per non-empty line; `texts` keeps the picked lines."""
    path = Path(path)
    lines = [ln.strip() for ln in _read(path).splitlines() if ln.strip()]
    if not lines:
        raise CalibrationError(f"{path} holds no text lines", hint="one sentence per line")
    picked = [lines[i] for i in sample_indices(len(lines), n, seed)]
    return CalibrationData(tokenize(picked, tokenizer, seq_len), f"{path} ({len(picked)} of {len(lines)} lines)",
                           texts=picked, files=[path.resolve()])


@reader("read_texts")
def read_texts(texts: Sequence[str], tokenizer: Any, *, labels: Any = None, class_names: Sequence[str] | None = None,
               seq_len: int = 128, source: str = "texts", input_names: Sequence[str] | None = None) -> CalibrationData:
    """In-memory texts, every one in order; input_names keeps and orders the tokenizer's outputs (the model's inputs)."""
    texts = [str(t) for t in texts]
    if not texts:
        raise CalibrationError(f"{source} holds no texts", hint="give at least one text")
    arrays = tokenize(texts, tokenizer, seq_len)
    if input_names:
        missing = [n for n in input_names if n not in arrays]
        if missing:
            raise CalibrationError(f"the tokenizer gives {list(arrays)}, not the model input(s) {missing}",
                                   hint="use the model's own tokenizer")
        arrays = {n: arrays[n] for n in input_names}
    return CalibrationData(arrays, f"{source} ({len(texts)} texts)", labels=labels, class_names=class_names, texts=texts)


@reader("read_csv")
def read_csv(path: str | os.PathLike, tokenizer: Any, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0,
             seq_len: int = 128) -> CalibrationData:
    """A CSV with header text,label: labels are ints, or strings mapped to ids in sorted order (class_names)."""
    path = Path(path)
    texts, raw = _csv_rows(path)
    labels, class_names = _label_ids(raw)
    idx = sample_indices(len(texts), n, seed)
    picked = [texts[i] for i in idx]
    return CalibrationData(tokenize(picked, tokenizer, seq_len), f"{path} ({len(picked)} of {len(texts)} rows)",
                           labels=labels[idx], class_names=class_names, texts=picked, files=[path.resolve()])


def _csv_rows(path: Path) -> tuple[list[str], list[str]]:
    """(texts, raw label strings) of the rows of a text,label CSV."""
    rows = list(csv.DictReader(io.StringIO(_read(path, "utf-8-sig"), newline="")))
    header = list(rows[0]) if rows else []
    if not rows or "text" not in header or "label" not in header:
        raise CalibrationError(f"{path} needs a header 'text,label' and at least one row (found {header or 'nothing'})",
                               hint="write the CSV as: text,label then one sample per row")
    texts, raw = [], []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        text, label = (row.get("text") or "").strip(), (row.get("label") or "").strip()
        if not text or not label:
            raise CalibrationError(f"{path} line {line}: {'text' if not text else 'label'} is empty",
                                   hint="every row needs a text and a label (quote texts that hold commas)")
        texts.append(text)
        raw.append(label)
    return texts, raw


def _label_ids(raw: list[str]) -> tuple[np.ndarray, list[str] | None]:
    """Integer labels as given; any non-integer label makes all of them class names, ids in sorted name order."""
    try:
        return np.array([int(v) for v in raw], dtype=np.int64), None
    except ValueError:
        names = sorted(set(raw))
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[v] for v in raw], dtype=np.int64), names


def _read(path: Path, encoding: str = "utf-8") -> str:
    try:
        return path.read_text(encoding=encoding, errors="replace")
    except OSError as err:
        raise CalibrationError(f"cannot read {path}: {err}", hint="check the path and its permissions") from err


# -- arrays -------------------------------------------------------------------------------------

@reader("read_numpy")
def read_numpy(path: str | os.PathLike, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0,
               input_names: Sequence[str] | None = None) -> CalibrationData:
    """.npy: one input; .npz: one input per key, except a key named 'labels' (the labels)."""
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise CalibrationError(f"cannot read {path}: {err}", hint="save with np.save / np.savez (no pickled objects)") from err
    if isinstance(loaded, np.ndarray):
        arrays = {(input_names or ["input"])[0]: loaded}
    else:
        with loaded:
            arrays = {k: loaded[k] for k in loaded.files}
    labels = arrays.pop("labels", None)
    return CalibrationData(arrays, str(path), labels=labels, files=[path.resolve()]).take(n, seed)


def read_torch(path: str | os.PathLike, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0,
               input_names: Sequence[str] | None = None) -> CalibrationData:
    """A torch.save'd tensor, tuple of tensors (one batch), dict, or list of those (tensors only: weights_only)."""
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, weights_only=True)
    except Exception as err:  # unpickling raises many types; any of them is a bad file for the user
        raise CalibrationError(f"cannot read {path}: {type(err).__name__}: {str(err)[:160]}",
                               hint="torch.save a tensor, a tuple of input tensors, or a list of them") from err
    data = read_iterable(obj, n=n, seed=seed, input_names=input_names, source=str(path))
    return CalibrationData(data.arrays, data.source, labels=data.labels, files=[path.resolve()], keyword=data.keyword,
                           check=False)


# -- iterables ----------------------------------------------------------------------------------

@reader("read_iterable")
def read_iterable(items: Any, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0, input_names: Sequence[str] | None = None,
                  labelled: bool = False, source: str = "iterable") -> CalibrationData:
    """Batches (leading batch dim): tensors/arrays, tuples of them (positional inputs), dicts (keyword inputs),
    or a list / iterable / DataLoader of those. labelled=True: the last element of each tuple, or a dict's
    'labels', is the label tensor."""
    parts: dict[str, list[np.ndarray]] = {}
    labels: list[np.ndarray] = []
    keyword = False
    for item in _items(items):
        named, label = _split(item, input_names, labelled)
        keyword = keyword or isinstance(item, Mapping)
        for k, v in named.items():
            parts.setdefault(k, []).append(to_numpy(v, f"{source} input '{k}'"))
        if label is not None:
            labels.append(to_numpy(label, f"{source} labels").reshape(-1))
    if not parts:
        raise CalibrationError(f"{source} yielded no samples", hint="give at least one batch")
    try:
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
    except ValueError as err:
        raise CalibrationError(f"batches from {source} cannot be stacked: {err}",
                               hint="give all batches the same shape except dim 0 (pad sequences)") from err
    data = CalibrationData(arrays, source, labels=np.concatenate(labels) if labels else None, keyword=keyword)
    return data.take(n, seed)


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _items(items: Any) -> Iterable[Any]:
    """The batches of `items`: one batch (tensor, dict, tuple of tensors) or an iterable of batches."""
    if _is_array(items) or isinstance(items, Mapping):
        return [items]
    if isinstance(items, tuple) and items and all(_is_array(t) for t in items):
        return [items]  # one batch of positional inputs
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise CalibrationError(f"cannot use {type(items).__name__} as data",
                               hint="pass a path, a tensor, a tuple or dict of tensors, or a list/DataLoader of them")
    return items


def _split(item: Any, input_names: Sequence[str] | None, labelled: bool) -> tuple[dict[str, Any], Any]:
    """(name -> input, label or None) of one batch."""
    if isinstance(item, Mapping):
        named = dict(item)
        return named, (named.pop("labels", None) if labelled else None)
    seq = tuple(item) if isinstance(item, (tuple, list)) else (item,)
    label = None
    if labelled:
        if len(seq) < 2:
            raise CalibrationError("labelled data needs (inputs..., labels) items",
                                   hint="yield (x, y) tuples, or pass labelled=False")
        seq, label = seq[:-1], seq[-1]
    names = list(input_names or [])[: len(seq)]
    names += [f"input_{i}" for i in range(len(names), len(seq))]
    return dict(zip(names, seq)), label


def to_numpy(value: Any, what: str = "data") -> np.ndarray:
    """A numpy array of a tensor (bfloat16 -> float32: numpy has no bfloat16) or array-like."""
    if hasattr(value, "detach"):  # torch tensor, without importing torch here
        t = value.detach().cpu()
        return (t.float() if str(t.dtype) == "torch.bfloat16" else t).numpy()
    if value is None or isinstance(value, (str, bytes)):
        raise CalibrationError(f"{what} is {type(value).__name__}, not a tensor",
                               hint="give tensors or arrays (tokenize text first)")
    return np.asarray(value)


__all__ = ["load", "load_tokenizer", "tokenize", "read_texts", "read_text", "read_csv", "read_numpy", "read_torch",
           "read_iterable", "to_numpy", "SUFFIXES"]
