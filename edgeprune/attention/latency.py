"""What one attention layer costs, dense vs block-sparse: timed on a runtime, or estimated analytically.

measured: the layer alone (q, k, v -> out, the model's heads x length x head dim) exported to ONNX twice, dense and
  sparse, timed in interleaved rounds on the host runtime; cached on disk beside the GEMM latency tables
  (edgeprune/measurement/latency.py), keyed by (profile, runtime, version, threads, shape, sparsity settings).
estimate: per head, in multiply-add equivalents (no runtime at hand, e.g. a non-host profile):
  dense  = 2 L^2 d (QK^T, PV) + E L^2 (mask + softmax over the scores)
  sparse = 2 L S B (d+1) (gathered blocks) + E L S B (their softmax) + E n S B (2d+1) (the K/V gather)
           + E n^2 (2d+1) (pooled tables and selection) + per-op overhead of the ~40 extra ops
  with n = ceil(L/B) blocks, S = K + ceil(n/B) gathered slots (K kept blocks + compensation), E = ELEMENT.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeprune.attention.config import AttentionSparsityConfig
from edgeprune.attention.kernel import blocks_kept
from edgeprune.attention.module import SparseAttention

if TYPE_CHECKING:
    from edgeprune.targets.target import Target

# An elementwise op or a copy moves ~1 float per lane where a MAC unit retires a fused multiply-add per lane, and
# exp/compare chains cost several: one element ~ 4 MACs is the ratio ORT's CPU MLAS kernels show (fitted on the
# MiniLM-shaped layer, see `estimate_attention`).
ELEMENT = 4.0
# The sparse graph has ~40 more small ops than dense attention (pooling, TopK, scatter, index arithmetic); each
# costs a dispatch (~5 us on ORT CPU ~ 1e5 MAC-equivalents at one core's FMA rate) however short the sequence is.
EXTRA_OPS, OP_MACS = 40, 1e5


@dataclasses.dataclass(frozen=True)
class AttentionShape:
    """One attention layer as the runtime sees it: [batch, heads, seq, head_dim] queries, keys and values."""

    heads: int
    seq: int
    head_dim: int
    causal: bool = False
    batch: int = 1

    def key(self, cfg: AttentionSparsityConfig) -> str:
        what = f"k{cfg.top_k}" if cfg.top_k is not None else f"d{cfg.density:g}"
        return (f"attention:{self.batch}x{self.heads}x{self.seq}x{self.head_dim}:c{int(self.causal)}:B{cfg.block_size}:"
                f"w{cfg.window}:g{cfg.global_blocks}:{what}:comp{int(cfg.compensate is not False)}:ph{int(cfg.per_head)}")


@dataclasses.dataclass(frozen=True)
class AttentionCost:
    """Dense and sparse cost of one layer. measured: p50 ms; estimate: MAC-equivalents (relative, not ms)."""

    dense: float
    sparse: float
    source: str  # measured | estimate
    blocks: int  # n
    kept: int  # K key blocks per query block (window + global blocks + TopK)

    @property
    def saving(self) -> float:
        return 1.0 - self.sparse / self.dense if self.dense > 0 else 0.0


class AttentionLayer(nn.Module):
    """q, k, v -> attention output: one SparseAttention as a module the exporter can take (dense at density 1)."""

    def __init__(self, cfg: AttentionSparsityConfig, causal: bool = False, dense: bool = False):
        super().__init__()
        self.attn = (SparseAttention(density=1.0, causal=causal) if dense
                     else SparseAttention.from_config(cfg, causal=causal))

    def forward(self, q, k, v):
        return self.attn(q, k, v)


def kept_blocks(shape: AttentionShape, cfg: AttentionSparsityConfig) -> tuple[int, int]:
    """(n blocks, K kept per query block) at this length: the same arithmetic as the kernel."""
    n = -(-shape.seq // cfg.block_size)
    forced = (cfg.window + 1 if shape.causal else 2 * cfg.window + 1) + cfg.global_blocks
    return n, int(blocks_kept(n, density=cfg.density, top_k=cfg.top_k, forced=forced))


def estimate_attention(shape: AttentionShape, cfg: AttentionSparsityConfig) -> AttentionCost:
    """Analytic cost (module docstring), MAC-equivalents for the whole layer (batch x heads)."""
    L, d, B, E = shape.seq, shape.head_dim, cfg.block_size, ELEMENT
    n, K = kept_blocks(shape, cfg)
    S = K + (-(-n // B) if cfg.compensate else 0)
    Lp = n * B
    per_head_dense = 2.0 * L * L * d + E * L * L
    per_head_sparse = (2.0 * Lp * S * B * (d + 1) + E * Lp * S * B + E * n * S * B * (2 * d + 1)
                       + E * n * n * (2 * d + 1))
    bh = shape.batch * shape.heads
    return AttentionCost(bh * per_head_dense, bh * per_head_sparse + EXTRA_OPS * OP_MACS, "estimate", n, K)


def break_even_seq(shape: AttentionShape, cfg: AttentionSparsityConfig, saving: float, limit: int = 65536) -> int | None:
    """The shortest length (whole blocks) at which the estimate saves at least `saving`; None up to `limit`."""
    for L in range(cfg.block_size, limit + 1, cfg.block_size):
        if estimate_attention(dataclasses.replace(shape, seq=L), cfg).saving >= saving:
            return L
    return None


def measure_attention(shape: AttentionShape, cfg: AttentionSparsityConfig, target: Target | None = None, *,
                      threads: int | None = None, iters: int = 30, rounds: int = 3, fresh: bool = False) -> AttentionCost:
    """Dense and sparse layer p50 ms on the target's runtime, on this machine (None: Target.host()); least round
    median of interleaved rounds, cached on disk."""
    from edgeprune.measurement.latency import host_target, open_table

    target = host_target(target)
    runtime = target.runtime
    # A table of its own (profile "<profile>/attention"): the GEMM table is rewritten whole when re-measured.
    table = open_table(f"{target.name}/attention", runtime, threads, fresh=fresh)
    key = shape.key(cfg)
    n, K = kept_blocks(shape, cfg)
    if not fresh and f"{key}:dense" in table.entries and f"{key}:sparse" in table.entries:
        return AttentionCost(table.entries[f"{key}:dense"] * 1e3, table.entries[f"{key}:sparse"] * 1e3, "measured", n, K)
    dense_ms, sparse_ms = _time_pair(shape, cfg, runtime, threads, iters, rounds)
    table.entries[f"{key}:dense"], table.entries[f"{key}:sparse"] = dense_ms / 1e3, sparse_ms / 1e3
    table.save()
    return AttentionCost(dense_ms, sparse_ms, "measured", n, K)


def export_layers(shape: AttentionShape, cfg: AttentionSparsityConfig, folder: Path,
                  dynamic: bool = False) -> dict[str, tuple[nn.Module, Path]]:
    """{"dense"|"sparse": (module, ONNX path)} of one layer at `shape` (dynamic: the length axis is symbolic)."""
    from edgeprune.exporter import export

    g = torch.Generator().manual_seed(0)
    qkv = tuple(torch.randn(shape.batch, shape.heads, shape.seq, shape.head_dim, generator=g) for _ in range(3))
    out = {}
    for label in ("dense", "sparse"):
        m = AttentionLayer(cfg, shape.causal, dense=label == "dense").eval()
        path = Path(folder) / f"{label}_{shape.seq}.onnx"
        if not path.exists():
            export(m, qkv, path, input_names=["q", "k", "v"],
                   dynamic_dims={i: {2: "seq"} for i in range(3)} if dynamic else None)
        out[label] = (m, path)
    return out


def _time_pair(shape, cfg, runtime: str, threads, iters: int, rounds: int) -> tuple[float, float]:
    from edgeprune.backends import BackendOptions, get_backend
    from edgeprune.measurement.bench import measure_many

    with tempfile.TemporaryDirectory(prefix="edgeprune-attn-") as tmp:
        layers = export_layers(shape, cfg, Path(tmp))
        fns = []
        for _, path in layers.values():
            sess = get_backend(runtime, BackendOptions(threads=threads)).compile(path)
            fns.append(sess.runner(sess.prepare_inputs(None)))
        timings = measure_many(fns, warmup=5, iters=iters, rounds=rounds)
    # least round median, as the GEMM tables: load on the machine only ever adds time
    return tuple(float(np.min(t.round_p50_ms)) for t in timings)  # type: ignore[return-value]
