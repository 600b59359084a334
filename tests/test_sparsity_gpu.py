"""PyTorch 2:4 semi-structured swap on CUDA (skipped without a GPU of compute capability >= 8.0)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import edgeprune as ep
from edgeprune.sparsity import SparsityConfig
from edgeprune.sparsity.cuda import sparse_kernels, swap_semi_structured, why_not_cuda

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(why_not_cuda() is not None, reason=f"needs CUDA sm80+: {why_not_cuda()}")]


def test_swap_eligible_linears_and_prove_the_sparse_kernel_ran():
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    x = torch.randn(64, 256)
    sparse = ep.sparsify(model, (x,), SparsityConfig(pattern="2:4", method="magnitude"))
    sparse = sparse.half().cuda()
    xc = x.half().cuda()
    with torch.no_grad():
        dense_out = sparse(xc).float()
    rows = {r.name: r for r in swap_semi_structured(sparse)}
    assert rows["0"].swapped and rows["2"].swapped
    assert not rows["4"].swapped and "not a multiple" in rows["4"].reason  # 10 output rows
    assert type(sparse[0].weight.data).__name__.startswith("SparseSemiStructuredTensor")
    with torch.no_grad():
        out = sparse(xc).float()
    assert torch.allclose(out, dense_out, atol=5e-2, rtol=5e-2)
    with torch.no_grad():
        kernels = sparse_kernels(lambda: sparse(xc))
    assert kernels, "no sparse GEMM kernel in the profiler trace"


def test_dense_or_fp32_weights_are_not_swapped():
    model = nn.Sequential(nn.Linear(128, 128)).cuda()
    rows = swap_semi_structured(model)
    assert not rows[0].swapped and "dtype" in rows[0].reason
    rows = swap_semi_structured(model.half())
    assert not rows[0].swapped and "2:4" in rows[0].reason
