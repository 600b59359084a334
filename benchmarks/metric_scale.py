"""What a neighbours / cosine score means: the held-out scores of changes to MiniLM-L6 that users already accept.

    python benchmarks/metric_scale.py

Writes results/metric_scale.md|json. Every row is scored on the 500 snippets of edgeprune's shipped `eval`
split against the dense model: 10-NN overlap (points; the default metric of `optimize` for encoders) and
the mean embedding cosine. Rows: an FP16 round trip of the weights, PyTorch's dynamic INT8 quantization of every
Linear (per-tensor int8 weights, dynamic int8 activations: the standard one-line CPU deployment step), and
uniform structured pruning with compensation, no recovery. The default `--max-drop` for neighbours is read
against this scale (edgeprune/metrics/limits.py).
"""
from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import zoo  # noqa: E402
from edgeprune.cli.optimize import default_data  # noqa: E402
from edgeprune.metrics import get_metric  # noqa: E402
from edgeprune.models import load_model  # noqa: E402
from edgeprune.pruning import StructuredConfig, prune  # noqa: E402


def _variants(model, example, calib):
    yield "fp16 round trip of the weights", copy.deepcopy(model).half().float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice
        yield "torch dynamic INT8 (every Linear)", torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    for ratio in (0.1, 0.25, 0.5):
        yield f"uniform {ratio:.0%} of heads + FFN, compensation, no recovery", prune(
            copy.deepcopy(model), example, StructuredConfig(ratio=ratio, round_to=8), calib=calib)


def main():
    loaded = load_model("minilm")
    calib, _, held = default_data(loaded)
    names = loaded.input_names
    batches = held.batches(32, drop_last=False)
    neighbours = get_metric("neighbours").bind(loaded.module, batches, input_names=names)
    cosine = get_metric("cosine").bind(loaded.module, batches, input_names=names)
    rows = []
    for label, variant in _variants(loaded.module, loaded.example_inputs, calib):
        rows.append({"change": label, "neighbours": neighbours(variant), "cosine": cosine(variant) / 100})
        print(rows[-1], flush=True)
    md = ["# What the neighbours metric measures: scores of familiar changes to MiniLM-L6", "",
          "Held-out: the 500 Rotten Tomatoes snippets of edgeprune's `eval` split, against the dense model.", "",
          "| change | 10-NN overlap (points) | embedding cosine |", "|---|---|---|"]
    md += [f"| {r['change']} | {r['neighbours']:.1f} | {r['cosine']:.4f} |" for r in rows]
    zoo.write_results("metric_scale", rows, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
