"""ArtifactModule: a compiled artifact (INT8 ONNX, OpenVINO IR, ...) on its runtime here, callable as an nn.Module.

Why: the metrics (edgeprune.metrics) score nn.Modules on held-out batches; what ships after quantization is the
artifact, so the artifact itself, run by the runtime that will run it, is what gets scored.

The artifacts optimize writes have static shapes (the example inputs': batch 1, the example's sequence length).
Eval batches are [B, t, ...] with t <= that length (padding trimmed): each sample is run alone, padded with zeros
up to the static shape (a zero attention mask: padded tokens are ignored by the model and by the mask-aware
metrics), and every output axis padded the same way is cut back to the sample's length.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn


class ArtifactModule(nn.Module):
    def __init__(self, path: str | Path, runtime: str, input_names: Sequence[str], threads: int | None = None):
        super().__init__()
        from edgeprune.backends import BackendOptions, get_backend

        self.session = get_backend(runtime, BackendOptions(threads=threads)).compile(Path(path))
        specs = {s.name: s for s in self.session.input_specs()}
        self.input_names = list(input_names)
        self.known = [n for n in self.input_names if n in specs]  # an input the graph folded away is not fed
        self.static = {n: tuple(specs[n].shape) for n in self.known}

    def _one(self, sample: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One sample ([1, ...] per input), padded to the static shape; outputs cut back along padded axes."""
        feeds, cut = {}, {}
        for name, x in sample.items():
            shape = self.static[name]
            pads = []
            for axis, (have, want) in enumerate(zip(x.shape, shape)):
                want = want if isinstance(want, int) and want > 0 else have  # a dynamic axis takes the sample's size
                pads.append((0, max(0, want - have)))
                if want > have:
                    cut[axis] = (want, have)
            feeds[name] = np.pad(x, pads) if any(p for _, p in pads) else x
        outs = self.session.run(self.session.prepare_inputs(feeds))
        # an output axis is cut where an input was padded on the same axis to the same size ([1, T] ids -> [1, T, H])
        return [o[tuple(slice(0, cut[a][1]) if a in cut and cut[a][0] == d else slice(None)
                        for a, d in enumerate(o.shape))] for o in outs]

    def forward(self, *inputs: torch.Tensor):
        batch = int(inputs[0].shape[0])
        per_sample = []
        for i in range(batch):
            sample = {n: t[i:i + 1].detach().cpu().numpy() for n, t in zip(self.input_names, inputs) if n in self.static}
            per_sample.append(self._one(sample))
        outs = [torch.from_numpy(np.concatenate([s[k] for s in per_sample])) for k in range(len(per_sample[0]))]
        return outs[0] if len(outs) == 1 else tuple(outs)
