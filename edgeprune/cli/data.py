"""What the `prune`, `sparsify` and `quantize` commands share about data: one reader for --calib, --train and
--eval-data (`read_data`), bound to the model's inputs, and the held-out score printed for --eval-data.

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


def data_options(command):
    """--calib, --train, --eval-data DATA and --image-size, for a command that calibrates, trains and scores
    (its function takes calib, train, eval_data, image_size; read them with read_data_options)."""
    import click

    forms = "a folder of images (or one subfolder per class), .txt, .csv (text,label), .npy/.npz or .pt"
    options = [
        click.option("--calib", type=click.Path(), metavar="DATA", help=f"Calibration data: {forms}."),
        click.option("--train", type=click.Path(), metavar="DATA",
                     help="Training data for recovery (default: the calibration data)."),
        click.option("--eval-data", "eval_data", type=click.Path(), metavar="DATA",
                     help="Held-out evaluation data; refused when it shares a file or a sample with --calib / --train."),
        click.option("--image-size", "image_size", type=int,
                     help="Image crop for photo folders (default: the model's H/W, else 224)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def read_data_options(model: Any, calib: Any, train: Any, eval_data: Any, image_size: int | None = None):
    """(calib, train, eval) CalibrationData (or None) from data_options' values: every sample of each path (the
    caller samples), eval checked disjoint from the others."""
    return read_sets(model, ReadOptions(n=None, crop=image_size), calib=calib, train=train, eval_data=eval_data)


# -- the held-out score printed for --eval-data ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HeldOutScore:
    """The changed model against the dense one on evaluation data it never saw."""

    samples: int
    cosine: float  # mean over samples of the cosine between the two models' (flattened) first outputs
    top1_agreement: float | None  # share of samples with the same argmax ((N, classes) outputs only)
    accuracy: tuple[float, float] | None  # (dense, changed) against the data's labels, when it has them

    def line(self) -> str:
        text = f"held-out {self.samples} samples: cosine to dense {self.cosine:.4f}"
        if self.top1_agreement is not None:
            text += f", top-1 agreement {100 * self.top1_agreement:.1f}%"
        if self.accuracy is not None:
            text += f", label accuracy {100 * self.accuracy[0]:.1f}% dense -> {100 * self.accuracy[1]:.1f}%"
        return text


def held_out_score(dense: Any, changed: Any, data: CalibrationData, batch_size: int = 16) -> HeldOutScore:
    """Run both models on `data` (positional inputs in the data's order) and compare their first outputs."""
    import torch

    from edgeprune.metrics import first_tensor

    ref, got, ndim = [], [], 0
    with torch.no_grad():
        for batch in data.batches(batch_size, drop_last=False):
            out = first_tensor(dense(*batch))
            ndim = out.ndim
            ref.append(out.float().flatten(1))  # (B, features)
            got.append(first_tensor(changed(*batch)).float().flatten(1))
    ref_all, got_all = torch.cat(ref), torch.cat(got)
    cosine = float(torch.nn.functional.cosine_similarity(ref_all, got_all, dim=1).mean())
    top1 = accuracy = None
    if ndim == 2 and ref_all.shape[1] > 1:  # (N, classes): a classifier, where argmax agreement means something
        top1 = float((ref_all.argmax(1) == got_all.argmax(1)).float().mean())
        if data.labels is not None and int(data.labels.max()) < ref_all.shape[1]:
            labels = torch.from_numpy(data.labels)
            accuracy = (float((ref_all.argmax(1) == labels).float().mean()),
                        float((got_all.argmax(1) == labels).float().mean()))
    return HeldOutScore(len(data), cosine, top1, accuracy)


__all__ = ["ReadOptions", "read_data", "read_sets", "data_options", "read_data_options", "model_specs", "tokenizer_source",
           "image_preprocess", "static_seq_len", "HeldOutScore", "held_out_score"]
