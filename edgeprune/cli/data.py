"""What the `prune`, `sparsify`, `quantize` and `optimize` commands share about data: the --calib, --train and
--eval-data options (read by edgeprune.data.files, bound to the model's inputs), and the held-out score printed
for --eval-data."""
from __future__ import annotations

import dataclasses
from typing import Any

from edgeprune.data.core import CalibrationData
from edgeprune.data.files import (ReadOptions, image_preprocess, model_specs, read_data, read_sets,  # noqa: F401
                                  static_seq_len)  # (re-exported: the commands read through here)
from edgeprune.models import tokenizer_source  # noqa: F401

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
