"""Calibration data: one deterministic sample set that drives pruning compensation and INT8 calibration.

    calib = CalibrationData.load("photos/", preprocess=ImagePreprocess(crop=224))   # folder of images
    calib = CalibrationData.load("lines.txt", tokenizer=builtin_path("minilm"))    # text, tokenized
    calib = CalibrationData.load("inputs.npz")                                     # .npy / .npz
    calib = CalibrationData.from_iterable(loader)                                  # tensors / tuples / dicts

Samples are stored as numpy arrays with a leading sample dim, one per model input. Sampling is
deterministic: the first `n` of a seeded permutation of the sorted sources, so the same files give the
same calibration set on every machine (pruning and quantization then see identical data).
`bind(specs)` checks the data against a model's inputs and says which shape/dtype was expected.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from edgeprune.errors import ConfigError

DEFAULT_SAMPLES = 128
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
_ONNX_TO_NUMPY = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


class CalibrationError(ConfigError):
    """Calibration data is empty, unreadable, or does not fit the model's inputs."""


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
    """How an image file becomes a model input (torchvision-style: resize shorter side, center crop, normalize)."""

    crop: int = 224
    resize: int | None = None  # shorter side before the crop; None = crop * 256 / 224 (the ImageNet convention)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    layout: str = "NCHW"  # NCHW | NHWC
    scale: float = 1.0 / 255.0  # pixel values to [0, 1] before mean/std

    def __post_init__(self):
        if self.layout.upper() not in ("NCHW", "NHWC"):
            raise ConfigError(f"image layout '{self.layout}' is not NCHW or NHWC", hint="use NCHW (PyTorch) or NHWC")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ConfigError(f"mean {self.mean} / std {self.std} need 3 values each, std > 0", hint="e.g. 0.485,0.456,0.406")

    def __call__(self, path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                resize = self.resize or int(round(self.crop * 256 / 224))
                w, h = img.size
                s = resize / min(w, h)
                img = img.resize((max(resize, round(w * s)), max(resize, round(h * s))), Image.BILINEAR)
                w, h = img.size
                left, top = (w - self.crop) // 2, (h - self.crop) // 2
                img = img.crop((left, top, left + self.crop, top + self.crop))
                arr = np.asarray(img, dtype=np.float32) * self.scale
        except (OSError, ValueError) as err:
            raise CalibrationError(f"cannot read image {path}: {err}", hint="remove the file or convert it to JPEG/PNG") from err
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return arr.transpose(2, 0, 1).copy() if self.layout.upper() == "NCHW" else arr


def sample_indices(available: int, n: int | None, seed: int = 0) -> np.ndarray:
    """Deterministic choice of min(n, available) indices, in ascending order (None = all)."""
    if n is not None and n < 1:
        raise CalibrationError(f"the number of calibration samples must be >= 1, got {n}", hint=f"e.g. {DEFAULT_SAMPLES}")
    if n is None or available <= n:
        return np.arange(available)
    return np.sort(np.random.default_rng(seed).permutation(available)[:n])


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a model input needs: name, shape (int = static, str/None = dynamic) and numpy dtype."""

    name: str
    shape: tuple[Any, ...]
    dtype: str

    def __str__(self) -> str:
        dims = ", ".join(str(d) if isinstance(d, int) and d > 0 else "N" if i == 0 else "?" for i, d in enumerate(self.shape))
        return f"{self.name} ({dims}) {self.dtype}"


def onnx_input_specs(path: str | os.PathLike) -> list[InputSpec]:
    """The graph inputs of an ONNX file (initializers excluded), without loading weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        t = inp.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        specs.append(InputSpec(inp.name, dims, _ONNX_TO_NUMPY.get(t.elem_type, "float32")))
    return specs


def as_specs(specs: Sequence[Any]) -> list[InputSpec]:
    """InputSpec from anything with name/shape/dtype (backends' TensorSpec, this module's InputSpec)."""
    return [s if isinstance(s, InputSpec) else InputSpec(s.name, tuple(s.shape), str(np.dtype(s.dtype))) for s in specs]


class CalibrationData:
    """Calibration samples: ordered name -> array with a leading sample dim (all arrays the same length)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], source: str = "arrays"):
        arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
        if not arrays or any(a.ndim == 0 or a.shape[0] == 0 for a in arrays.values()):
            raise CalibrationError(f"calibration data from {source} is empty",
                                   hint="give at least one sample (a folder of images, a .txt with lines, a .npy/.npz)")
        counts = {k: a.shape[0] for k, a in arrays.items()}
        if len(set(counts.values())) != 1:
            raise CalibrationError(f"calibration inputs from {source} have different sample counts {counts}",
                                   hint="give every input the same number of samples (dim 0)")
        self.arrays = arrays
        self.source = source

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def load(cls, source: Any, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0, preprocess: ImagePreprocess | None = None,
             tokenizer: Any = None, seq_len: int = 128, input_names: Sequence[str] | None = None) -> "CalibrationData":
        """Dispatch on the source: folder of images, .txt, .npy/.npz, or a Python iterable."""
        if isinstance(source, CalibrationData):
            return source  # already sampled by whoever built it: never re-sample behind the caller's back
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if path.is_dir():
                return cls.from_images(path, preprocess or ImagePreprocess(), n=n, seed=seed, input_name=(input_names or ["input"])[0])
            if not path.is_file():
                raise CalibrationError(f"calibration data not found: {path}", hint="give a folder of images, a .txt, a .npy or .npz")
            if path.suffix == ".txt":
                if tokenizer is None:
                    raise CalibrationError(f"{path} is text: it needs the model's tokenizer",
                                           hint="pass tokenizer= (a Hugging Face folder or tokenizer object)")
                return cls.from_text(path, tokenizer, n=n, seed=seed, seq_len=seq_len)
            if path.suffix in (".npy", ".npz"):
                return cls.from_numpy(path, n=n, seed=seed, input_names=input_names)
            raise CalibrationError(f"cannot read calibration data from {path.name}", hint="use a folder of images, a .txt, a .npy or .npz")
        return cls.from_iterable(source, n=n, seed=seed, input_names=input_names)

    @classmethod
    def from_images(cls, folder: str | os.PathLike, preprocess: ImagePreprocess, *, n: int | None = DEFAULT_SAMPLES,
                    seed: int = 0, input_name: str = "input") -> "CalibrationData":
        folder = Path(folder)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise CalibrationError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})",
                                   hint="point --calib at a folder that holds calibration photos")
        picked = [files[i] for i in sample_indices(len(files), n, seed)]
        return cls({input_name: np.stack([preprocess(p) for p in picked])}, source=f"{folder} ({len(picked)} of {len(files)} images)")

    @classmethod
    def from_text(cls, path: str | os.PathLike, tokenizer: Any, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0,
                  seq_len: int = 128) -> "CalibrationData":
        path = Path(path)
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        if not lines:
            raise CalibrationError(f"{path} holds no text lines", hint="one calibration sentence per line")
        picked = [lines[i] for i in sample_indices(len(lines), n, seed)]
        tok = load_tokenizer(tokenizer)
        # Pad to a fixed length: static-shape exports (and NPUs) need it, and batches stack without ragged dims.
        enc = tok(picked, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
        return cls({k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}, source=f"{path} ({len(picked)} of {len(lines)} lines)")

    @classmethod
    def from_numpy(cls, path: str | os.PathLike, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0,
                   input_names: Sequence[str] | None = None) -> "CalibrationData":
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
        data = cls(arrays, source=str(path))
        return data.take(n, seed)

    @classmethod
    def from_iterable(cls, items: Any, *, n: int | None = DEFAULT_SAMPLES, seed: int = 0,
                      input_names: Sequence[str] | None = None) -> "CalibrationData":
        """Items are batches (leading batch dim): tensors/arrays, tuples of them (positional inputs), or dicts."""
        if hasattr(items, "shape") or isinstance(items, (dict, tuple)):
            items = [items]
        parts: dict[str, list[np.ndarray]] = {}
        try:
            iterator = iter(items)
        except TypeError as err:
            raise CalibrationError(f"cannot use {type(items).__name__} as calibration data",
                                   hint="pass a folder, .txt, .npy/.npz, or an iterable of arrays/tuples/dicts") from err
        for item in iterator:
            if isinstance(item, Mapping):
                named = dict(item)
            else:
                seq = tuple(item) if isinstance(item, (tuple, list)) else (item,)
                names = list(input_names or []) + [f"input_{i}" for i in range(len(seq))]
                named = dict(zip(names, seq))
            for k, v in named.items():
                parts.setdefault(k, []).append(_to_numpy(v))
        if not parts:
            raise CalibrationError("the calibration iterable yielded no samples", hint="give at least one batch")
        try:
            arrays = {k: np.concatenate(v) for k, v in parts.items()}
        except ValueError as err:
            raise CalibrationError(f"calibration batches cannot be stacked: {err}",
                                   hint="give all batches the same shape except dim 0 (pad sequences)") from err
        return cls(arrays, source="iterable").take(n, seed)

    # -- views ----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self.arrays)

    def __len__(self) -> int:
        return next(iter(self.arrays.values())).shape[0]

    def __iter__(self) -> Iterator[tuple]:
        """One tuple of torch tensors per sample (batch dim 1): pruning's `calib=` accepts this directly."""
        return iter(self.batches(1))

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{tuple(v.shape[1:])}:{v.dtype}" for k, v in self.arrays.items())
        return f"CalibrationData({len(self)} samples from {self.source}: {shapes})"

    def take(self, n: int | None, seed: int = 0) -> "CalibrationData":
        idx = sample_indices(len(self), n, seed)
        if len(idx) == len(self):
            return self
        return CalibrationData({k: v[idx] for k, v in self.arrays.items()}, source=f"{self.source} ({len(idx)} sampled)")

    def head(self, n: int) -> "CalibrationData":
        return CalibrationData({k: v[:n] for k, v in self.arrays.items()}, source=self.source)

    def _chunks(self, batch_size: int) -> Iterator[slice]:
        if batch_size < 1:
            raise CalibrationError(f"batch size must be >= 1, got {batch_size}", hint="e.g. 1 or 8")
        for start in range(0, len(self) - batch_size + 1, batch_size):  # only full batches: static batch dims
            yield slice(start, start + batch_size)

    def feeds(self, input_names: Sequence[str] | None = None, batch_size: int = 1) -> list[dict[str, np.ndarray]]:
        """numpy feed dicts, `batch_size` samples each (a trailing partial batch is dropped)."""
        names = list(input_names or self.names)
        missing = [n for n in names if n not in self.arrays]
        if missing:
            raise CalibrationError(f"calibration data has no input(s) {missing}; it holds {self.names}",
                                   hint="bind the data to the model first (CalibrationData.bind)")
        if len(self) < batch_size:
            raise CalibrationError(f"{len(self)} calibration samples cannot fill one batch of {batch_size}",
                                   hint=f"give at least {batch_size} samples")
        return [{n: np.ascontiguousarray(self.arrays[n][s]) for n in names} for s in self._chunks(batch_size)]

    def batches(self, batch_size: int = 1, input_names: Sequence[str] | None = None) -> list[tuple]:
        """Tuples of torch tensors in input order, `batch_size` samples each."""
        import torch

        return [tuple(torch.from_numpy(a) for a in feed.values()) for feed in self.feeds(input_names, batch_size)]

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
        specs = as_specs(specs)
        expected = "; ".join(str(s) for s in specs)
        if all(s.name in self.arrays for s in specs):
            picked = [self.arrays[s.name] for s in specs]
        elif len(specs) == len(self.arrays):
            picked = list(self.arrays.values())
        else:
            raise CalibrationError(f"calibration data from {self.source} holds inputs {self.names}, the model expects {expected}",
                                   hint="name the arrays like the model inputs (npz keys), or give one array per input")
        out = {}
        for spec, arr in zip(specs, picked):
            got = f"{tuple(arr.shape[1:])} {arr.dtype} per sample"
            if arr.ndim != len(spec.shape):
                raise CalibrationError(f"calibration input '{spec.name}' has shape {tuple(arr.shape)} (rank {arr.ndim}, {got}); "
                                       f"the model expects {spec} (rank {len(spec.shape)}, N = samples)",
                                       hint="give samples stacked on dim 0 with the model's per-sample shape")
            for i, (have, want) in enumerate(zip(arr.shape[1:], spec.shape[1:]), start=1):
                if isinstance(want, int) and want > 0 and have != want:
                    raise CalibrationError(f"calibration input '{spec.name}' is {got}, dim {i} is {have}; the model expects {spec}",
                                           hint="resize/crop images or set the sequence length to the model's static shape")
            want_kind, have_kind = np.dtype(spec.dtype).kind, arr.dtype.kind
            if want_kind != have_kind and not ({want_kind, have_kind} <= {"i", "u"}):
                raise CalibrationError(f"calibration input '{spec.name}' has dtype {arr.dtype}; the model expects {spec}",
                                       hint="token ids must be integers, images/features floats")
            out[spec.name] = arr.astype(spec.dtype, copy=False)
        return CalibrationData(out, source=self.source)


def load_tokenizer(tokenizer: Any):
    """A tokenizer object as is, or AutoTokenizer from a local Hugging Face folder (no network)."""
    if not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    try:
        from transformers import AutoTokenizer
    except ImportError as err:
        raise CalibrationError("text calibration needs transformers", hint="pip install 'edgeprune[hf]'") from err
    try:
        return AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    except (OSError, ValueError) as err:
        raise CalibrationError(f"no tokenizer in {tokenizer}: {err}", hint="point at the model's Hugging Face folder") from err


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor, without importing torch here
        return value.detach().cpu().numpy()
    return np.asarray(value)


__all__ = ["CalibrationData", "CalibrationError", "ImagePreprocess", "InputSpec", "onnx_input_specs", "sample_indices",
           "load_tokenizer", "DEFAULT_SAMPLES"]
