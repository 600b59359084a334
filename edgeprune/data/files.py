"""Files into CalibrationData bound to a model's inputs: one reader for every command's --calib, --train and
--eval-data, and for a sweep's per-model data (edgeprune.sweeper).

The model decides how a file becomes inputs: text is tokenized with the model's own tokenizer (the packaged
"minilm" model, or the Hugging Face folder given as the model) and padded to its static sequence length;
images are cropped to its static H/W.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeprune.data.core import DEFAULT_SAMPLES, CalibrationData
from edgeprune.data.errors import CalibrationError
from edgeprune.data.images import ImagePreprocess
from edgeprune.data.sources import SUFFIXES, load
from edgeprune.data.specs import InputSpec, onnx_input_specs, torch_input_specs
from edgeprune.models import tokenizer_source

TEXT_SUFFIXES = (".txt", ".csv")


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How files become samples (the defaults follow the model)."""

    n: int | None = DEFAULT_SAMPLES  # samples: the first n of a seeded permutation (None = all)
    seed: int = 0
    seq_len: int | None = None  # text: None = the model's static sequence length, else 128
    crop: int | None = None  # images: None = the model's static H/W, else 224
    resize: int | None = None  # shorter image side before the crop (None = crop * 256 / 224)
    mean: tuple[float, ...] | None = None  # None = ImageNet
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"


def model_specs(model: Any) -> list[InputSpec]:
    """Input specs of a LoadedModel with a module (from its example inputs) or of an ONNX file / ONNX LoadedModel."""
    onnx_path = getattr(model, "onnx_path", None)
    if getattr(model, "module", None) is not None:
        return torch_input_specs(model.example_inputs, model.input_names)
    return onnx_input_specs(onnx_path or model)


def image_preprocess(specs: Sequence[InputSpec], options: ReadOptions) -> tuple[ImagePreprocess, str]:
    """Image settings and the image input's name: the model's static spatial dims decide the crop unless given."""
    spec = next((s for s in specs if s.dtype.startswith("float")), None)
    crop = options.crop
    if crop is None and spec is not None and len(spec.shape) == 4:
        dims = spec.shape[2:] if options.layout.upper() == "NCHW" else spec.shape[1:3]
        crop = next((d for d in dims if isinstance(d, int) and d > 0), None)
    kwargs: dict[str, Any] = {"crop": crop or 224, "resize": options.resize, "layout": options.layout}
    if options.mean:
        kwargs["mean"] = tuple(options.mean)
    if options.std:
        kwargs["std"] = tuple(options.std)
    return ImagePreprocess(**kwargs), (spec.name if spec else "input")


def static_seq_len(specs: Sequence[InputSpec]) -> int | None:
    """The static length of the first (N, L) integer input (token ids), if any."""
    for s in specs:
        if len(s.shape) == 2 and np.dtype(s.dtype).kind in "iu" and isinstance(s.shape[1], int) and s.shape[1] > 0:
            return s.shape[1]
    return None


def read_data(path: str | Path, model: Any, options: ReadOptions = ReadOptions(), *,
              role: str = "calibration") -> CalibrationData:
    """Samples from `path` (folder of images or class tree, .txt, .csv, .npy/.npz, .pt) bound to `model`'s inputs.

    model: a LoadedModel (its module's example inputs give the specs) or an .onnx path. role names the data in
    errors ("calibration", "train", "eval")."""
    path = Path(path)
    if not path.exists():
        raise CalibrationError(f"{role} data not found: {path}", hint=f"give a {SUFFIXES}")
    specs = model_specs(model)
    tokenizer = tokenizer_source(model)
    if path.suffix.lower() in TEXT_SUFFIXES and tokenizer is None:
        raise CalibrationError(f"{role} data {path} is text, and {getattr(model, 'source', model)} has no tokenizer",
                               hint="use a Hugging Face model folder (it holds the tokenizer), or tokenize into a .npz")
    preprocess, image_input = image_preprocess(specs, options)
    names = [image_input] if path.is_dir() else [s.name for s in specs]
    seq_len = options.seq_len or static_seq_len(specs) or 128
    data = load(path, n=options.n, seed=options.seed, preprocess=preprocess, tokenizer=tokenizer, seq_len=seq_len,
                input_names=names)
    return data.bind(specs)


def read_sets(model: Any, options: ReadOptions = ReadOptions(), *, calib: Any = None, train: Any = None,
              eval_data: Any = None) -> tuple[CalibrationData | None, CalibrationData | None, CalibrationData | None]:
    """(calib, train, eval) read from the paths given (None stays None), eval refused (CalibrationError, exit 2)
    when it shares a source file or a sample with calib or train."""
    from edgeprune.data.overlap import check_disjoint

    read = {role: read_data(path, model, options, role=role) if path else None
            for role, path in (("calibration", calib), ("train", train), ("eval", eval_data))}
    check_disjoint(read["eval"], calib=read["calibration"], train=read["train"])
    return read["calibration"], read["train"], read["eval"]
