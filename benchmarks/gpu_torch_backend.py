"""GPU check of edgeprune's torch backend: a BERT-sized encoder on CUDA vs CPU through edgeprune.benchmark.

    python benchmarks/gpu_torch_backend.py [--out DIR]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    from transformers import BertConfig, BertModel

    import edgeprune as ep
    from edgeprune.backends import BackendOptions, get_backend
    from edgeprune.models import HFModelWrapper, LoadedModel

    # MiniLM-L6 geometry (random weights: the packaged weights do not travel to the GPU machine)
    cfg = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    model = HFModelWrapper(BertModel(cfg).eval(), names).eval()
    ids = torch.randint(1000, 2000, (8, 128))
    inputs = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    loaded = LoadedModel("minilm-geometry", "module", model, inputs, names)
    feeds = {n: t.numpy() for n, t in zip(names, inputs)}
    cpu = get_backend("torch", BackendOptions(device="cpu")).compile(loaded)
    gpu = get_backend("torch", BackendOptions(device="cuda")).compile(loaded)
    diff = float(np.abs(cpu.run(feeds)[0] - gpu.run(feeds)[0]).max())
    from edgeprune.measurement.bench import benchmark_sessions

    results = benchmark_sessions([("cpu", cpu, feeds), ("cuda", gpu, feeds)], batch=8, warmup=5, iters=50, rounds=5)
    (s,) = ep.compare(results)
    doc = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "max_abs_diff_cpu_vs_cuda": diff,
           "cpu_p50_ms": results[0].stats.p50, "cuda_p50_ms": results[1].stats.p50, "cuda_speedup": s.__dict__}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_torch_backend.json").write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2))
    assert diff < 1e-3, diff


if __name__ == "__main__":
    main()
