"""Dense vs 2:4 semi-structured GEMM on a CUDA GPU through PyTorch, with the kernel names that ran.

    python benchmarks/gpu_semi_structured.py [--out DIR]

Writes DIR/gpu_semi_structured.md and .json (default benchmarks/results). Shapes: MiniLM-L6 linears
(tokens x 384 -> 1536 etc.), BERT-base, LLaMA-7B-sized and 8192^3. fp16, weights pruned to 2:4 by
magnitude along the input dim, then swapped with torch.sparse.to_sparse_semi_structured. Timing: CUDA
events over interleaved rounds; speedup = median of per-round dense/sparse ratios (min-max).
The kernel names come from torch.profiler, so "sparse kernel ran" is read, not assumed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
from pathlib import Path

import torch

SHAPES = [  # (name, tokens M, in K, out N)
    ("MiniLM FFN up (128 tok)", 128, 384, 1536),
    ("MiniLM FFN down (128 tok)", 128, 1536, 384),
    ("MiniLM FFN up (8x128 tok)", 1024, 384, 1536),
    ("BERT-base FFN up (8x128 tok)", 1024, 768, 3072),
    ("BERT-base FFN down (8x128 tok)", 1024, 3072, 768),
    ("LLaMA-7B MLP up (2048 tok)", 2048, 4096, 11008),
    ("LLaMA-7B MLP down (2048 tok)", 2048, 11008, 4096),
    ("square 8192^3", 8192, 8192, 8192),
]


def prune_2_4(w: torch.Tensor) -> torch.Tensor:
    """Zero the 2 smallest |w| in every group of 4 consecutive inputs of each output row."""
    out, k = w.shape
    groups = w.reshape(out, k // 4, 4)
    idx = groups.abs().argsort(dim=-1)[..., :2]
    return groups.scatter(-1, idx, 0).reshape(out, k)


def time_fn(fn, iters: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def kernel_names(fn) -> list[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.key for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA})


def run_shape(name, m, k, n, rounds=7, iters=50, cutlass=False):
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    SparseSemiStructuredTensor._FORCE_CUTLASS = cutlass  # PyTorch's switch between its two 2:4 kernel libraries
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    w = prune_2_4(torch.randn(n, k, device="cuda", dtype=torch.float16))
    w_sparse = to_sparse_semi_structured(w)
    dense = lambda: torch.nn.functional.linear(x, w)  # noqa: E731
    sparse = lambda: torch.nn.functional.linear(x, w_sparse)  # noqa: E731
    err = (dense() - sparse()).abs().max().item()
    for _ in range(10):
        dense(), sparse()
    d_ms, s_ms = [], []
    for _ in range(rounds):
        d_ms.append(time_fn(dense, iters))
        s_ms.append(time_fn(sparse, iters))
    ratios = [d / s for d, s in zip(d_ms, s_ms)]
    return {"shape": name, "library": "CUTLASS" if cutlass else "cuSPARSELt", "M": m, "K": k, "N": n, "dense_ms": statistics.median(d_ms), "sparse_ms": statistics.median(s_ms),
            "speedup": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
            "max_abs_diff": err, "dense_kernels": kernel_names(dense), "sparse_kernels": kernel_names(sparse),
            # cuSPARSELt and CUTLASS sparse GEMM kernels carry "sp"arse in their names; read, not assumed
            "sparse_kernel_ran": any("spars" in kname.lower() for kname in kernel_names(sparse))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for cutlass in (False, True):
        for shape in SHAPES:
            try:
                rows.append(run_shape(*shape, cutlass=cutlass))
            except Exception as err:  # record unsupported shapes instead of stopping the sweep
                rows.append({"shape": shape[0], "library": "CUTLASS" if cutlass else "cuSPARSELt",
                             "error": f"{type(err).__name__}: {err}"})
            print({k: v for k, v in rows[-1].items() if "kernels" not in k}, flush=True)
    backend = getattr(torch.sparse.SparseSemiStructuredTensor, "_FORCE_CUTLASS", None)
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "force_cutlass": backend, "rounds": 7, "iters_per_round": 50, "dtype": "float16"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_semi_structured.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"# 2:4 semi-structured vs dense GEMM, PyTorch on {meta['gpu']}", "",
             f"torch {meta['torch']}, CUDA {meta['cuda']}, fp16, {meta['date']}. Speedup = median of 7 interleaved rounds "
             "of dense/sparse time (min-max). Kernel names from torch.profiler.", "",
             "| GEMM | 2:4 library | M x K x N | dense ms | 2:4 ms | speedup (min-max) | max abs diff | sparse kernel ran | 2:4 kernels |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['library']} | | | | not run: {r['error'][:120]} | | | |")
            continue
        lines.append(f"| {r['shape']} | {r['library']} | {r['M']}x{r['K']}x{r['N']} | {r['dense_ms']:.4f} | {r['sparse_ms']:.4f} | "
                     f"{r['speedup']:.2f}x ({r['speedup_min']:.2f}-{r['speedup_max']:.2f}) | {r['max_abs_diff']:.3g} | "
                     f"{'yes' if r['sparse_kernel_ran'] else 'no'} | "
                     f"{'<br>'.join(k[:90] for k in r['sparse_kernels'] if 'Memset' not in k)} |")
    (out / "gpu_semi_structured.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
