"""Sparsity patterns as data: Unstructured, NM(n, m) and Block(rows, cols).

Every pattern works on the *matrix view* of a weight, shape (out, K):
    Linear (out, in)               -> itself, K = in
    Conv2d (out, C_in, kh, kw)     -> permute to (out, kh, kw, C_in) and flatten, K = kh*kw*C_in,
                                      so m consecutive columns are m consecutive input channels at one
                                      kernel position: the layout TensorRT reads 2:4 from.
    ONNX MatMul (in, out)          -> transpose (the N:M groups run along axis 0 in the file).
A mask is a bool tensor of the matrix view's shape, True = weight kept.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np
import torch

from edgeprune.errors import SparsityError

# -- matrix view ----------------------------------------------------------------------


def to_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(out, K) view of a Linear (2-D) or Conv (3-D/4-D) weight; conv columns ordered (kernel pos, C_in)."""
    if weight.ndim == 2:
        return weight
    if weight.ndim in (3, 4, 5):
        dims = (0, *range(2, weight.ndim), 1)
        return weight.permute(*dims).reshape(weight.shape[0], -1)
    raise SparsityError(f"cannot sparsify a {weight.ndim}-D weight of shape {tuple(weight.shape)}",
                        hint="only Linear (2-D) and Conv (3/4/5-D) weights have a pattern layout")


def from_matrix(matrix: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of to_matrix for a weight of `shape`."""
    if len(shape) == 2:
        return matrix.reshape(shape)
    out, cin, *kernel = shape
    inv = (0, len(shape) - 1, *range(1, len(shape) - 1))
    return matrix.reshape(out, *kernel, cin).permute(*inv).contiguous()


def _channels_in(shape: tuple[int, ...]) -> int:
    """Input channels of one kernel position: K for Linear, C_in for Conv."""
    return shape[1]


def _as_tensor(weight: Any) -> torch.Tensor:
    if isinstance(weight, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(weight).astype(np.float32, copy=False))
    return weight.detach().float()


def _keep_top(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Keep-mask over a flat score tensor that drops exactly the n_prune smallest."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if n_prune > 0:
        idx = torch.topk(scores, n_prune, largest=False, sorted=False).indices
        keep[idx] = False
    return keep


# -- reports --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PatternCheck:
    """Result of checking one weight against a pattern."""

    pattern: str
    shape: tuple[int, ...]  # matrix view (out, K)
    ok: bool
    sparsity: float  # fraction of exact zeros
    groups: int  # N:M groups / blocks examined (elements for unstructured)
    violations: int  # groups with too few zeros / partially zero blocks counted as violations
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- patterns -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SparsityPattern:
    """Base: subclasses set `name` and implement `mask`, `check`, `validate`."""

    @property
    def name(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def kind(self) -> str:
        """Key used with device profiles: 'unstructured', 'n:m' or 'block' (2:4 says '2:4')."""
        raise NotImplementedError

    @property
    def fixed_sparsity(self) -> float | None:
        """The sparsity the pattern implies (N:M), or None when any level is possible."""
        return None

    def __str__(self) -> str:
        return self.name

    def validate(self, shape: tuple[int, ...], where: str = "weight") -> None:
        if len(shape) < 2:
            raise SparsityError(f"{where}: a {len(shape)}-D tensor has no pattern layout", hint="sparsify Linear/Conv weights only")

    def window(self, columns: int) -> int:
        """Columns SparseGPT selects the mask over at once (a multiple of the pattern's column group)."""
        return min(128, columns)

    def mask(self, scores: torch.Tensor, sparsity: float | None = None, per_row: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def check(self, weight: Any, sparsity: float | None = None, strict: bool = True) -> PatternCheck:
        raise NotImplementedError

    def target(self, sparsity: float | None) -> float:
        """The sparsity this pattern will produce for a requested value."""
        if sparsity is None:
            raise SparsityError(f"pattern {self.name} needs a sparsity", hint="pass sparsity=0.5 (0 < s < 1)")
        if not 0.0 < sparsity < 1.0:
            raise SparsityError(f"sparsity {sparsity} is out of range for pattern {self.name}", hint="use 0 < sparsity < 1")
        return float(sparsity)

    def compressed_bytes(self, numel: int, nnz: int, bytes_per_value: float) -> int:
        """Size of a compressed store of this weight: values + index metadata (bitmask by default)."""
        return int(math.ceil(nnz * bytes_per_value + numel / 8))


@dataclasses.dataclass(frozen=True)
class Unstructured(SparsityPattern):
    """Any zeros anywhere. Per-layer exact count (or per-row with per_row=True, as Wanda compares)."""

    @property
    def name(self) -> str:
        return "unstructured"

    @property
    def kind(self) -> str:
        return "unstructured"

    def mask(self, scores, sparsity=None, per_row=False):
        s = self.target(sparsity)
        if per_row:
            n_prune = int(round(s * scores.shape[1]))
            keep = torch.ones_like(scores, dtype=torch.bool)
            if n_prune:
                idx = torch.topk(scores, n_prune, dim=1, largest=False, sorted=False).indices
                keep.scatter_(1, idx, False)
            return keep
        return _keep_top(scores.reshape(-1), int(round(s * scores.numel()))).reshape(scores.shape)

    def check(self, weight, sparsity=None, strict=True):
        mat = to_matrix(_as_tensor(weight))
        zeros = float((mat == 0).float().mean()) if mat.numel() else 0.0
        ok = sparsity is None or zeros >= sparsity - 1e-3
        detail = "" if ok else f"{zeros:.1%} zeros < required {sparsity:.1%}"
        return PatternCheck(self.name, tuple(mat.shape), ok, zeros, mat.numel(), 0 if ok else 1, detail)


@dataclasses.dataclass(frozen=True)
class NM(SparsityPattern):
    """At most n nonzeros in every group of m consecutive input channels (per output row, per kernel position)."""

    n: int = 2
    m: int = 4

    def __post_init__(self):
        if not (isinstance(self.n, int) and isinstance(self.m, int)) or self.m < 2 or not 1 <= self.n < self.m:
            raise SparsityError(f"bad N:M pattern '{self.n}:{self.m}': need 1 <= N < M (N kept of every M)",
                                hint="e.g. 2:4 (TensorRT / cuSPARSELt) or 1:4, 4:8")

    @property
    def fixed_sparsity(self) -> float:
        return 1.0 - self.n / self.m

    @property
    def name(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def kind(self) -> str:
        return self.name if (self.n, self.m) == (2, 4) else "n:m"

    def target(self, sparsity):
        if sparsity is not None and abs(sparsity - self.fixed_sparsity) > 1e-6:
            raise SparsityError(f"pattern {self.name} fixes sparsity at {self.fixed_sparsity:.2f}, got {sparsity}",
                                hint=f"leave sparsity unset or pass {self.fixed_sparsity:.2f}")
        return self.fixed_sparsity

    def validate(self, shape, where="weight"):
        super().validate(shape, where)
        cin = _channels_in(shape)
        if cin % self.m:
            kind = "C_in" if len(shape) > 2 else "K"
            raise SparsityError(f"{where}: {kind}={cin} is not divisible by {self.m}, so {self.name} groups do not tile it "
                                f"(shape {tuple(shape)})", hint="add this layer to ignore=[...] or pad its input channels")

    def window(self, columns):
        return self.m

    def mask(self, scores, sparsity=None, per_row=False):
        self.target(sparsity)
        rows, k = scores.shape
        if k % self.m:
            raise SparsityError(f"K={k} is not divisible by {self.m} for pattern {self.name}", hint="ignore this layer")
        groups = scores.reshape(rows, k // self.m, self.m)
        idx = torch.topk(groups, self.m - self.n, dim=2, largest=False, sorted=False).indices
        keep = torch.ones_like(groups, dtype=torch.bool).scatter_(2, idx, False)
        return keep.reshape(rows, k)

    def check(self, weight, sparsity=None, strict=True):
        mat = to_matrix(_as_tensor(weight))
        rows, k = mat.shape
        zeros = float((mat == 0).float().mean()) if mat.numel() else 0.0
        if k % self.m:
            return PatternCheck(self.name, (rows, k), False, zeros, 0, 0, f"K={k} not divisible by {self.m}")
        zero_count = (mat.reshape(rows, k // self.m, self.m) == 0).sum(dim=2)
        bad = int((zero_count < self.m - self.n).sum())
        groups = rows * (k // self.m)
        detail = f"{bad} of {groups} groups of {self.m} have fewer than {self.m - self.n} zeros" if bad else ""
        return PatternCheck(self.name, (rows, k), bad == 0, zeros, groups, bad, detail)

    def compressed_bytes(self, numel, nnz, bytes_per_value):
        # n values per group plus ceil(log2 m) bits of position metadata per kept value (2 bits for 2:4)
        kept = numel * self.n // self.m
        return int(math.ceil(kept * bytes_per_value + kept * math.ceil(math.log2(self.m)) / 8))


@dataclasses.dataclass(frozen=True)
class Block(SparsityPattern):
    """rows x cols tiles of the matrix view, each all-zero or kept."""

    rows: int = 4
    cols: int = 4

    def __post_init__(self):
        if self.rows < 1 or self.cols < 1 or self.rows * self.cols < 2:
            raise SparsityError(f"bad block pattern {self.rows}x{self.cols}", hint="use blocks of at least 2 weights, e.g. block4x4")

    @property
    def name(self) -> str:
        return f"block{self.rows}x{self.cols}"

    @property
    def kind(self) -> str:
        return "block"

    def validate(self, shape, where="weight"):
        super().validate(shape, where)
        out, k = shape[0], int(np.prod(shape[1:]))
        if self.rows > out or self.cols > k:
            raise SparsityError(f"{where}: block {self.rows}x{self.cols} is larger than the weight's matrix view {out}x{k}",
                                hint="use a smaller block or add this layer to ignore=[...]")
        if out % self.rows or k % self.cols:
            raise SparsityError(f"{where}: matrix view {out}x{k} is not divisible into {self.rows}x{self.cols} blocks",
                                hint="pick a block that divides both dims or add this layer to ignore=[...]")

    def window(self, columns):
        return min(columns, self.cols * max(1, 128 // self.cols))

    def _tiles(self, mat):
        r, c = mat.shape
        return mat.reshape(r // self.rows, self.rows, c // self.cols, self.cols)

    def mask(self, scores, sparsity=None, per_row=False):
        s = self.target(sparsity)
        r, c = scores.shape
        if r % self.rows or c % self.cols:
            raise SparsityError(f"{r}x{c} is not divisible into {self.rows}x{self.cols} blocks", hint="ignore this layer")
        block_scores = self._tiles(scores).sum(dim=(1, 3))  # (r/rows, c/cols)
        keep_blocks = _keep_top(block_scores.reshape(-1), int(round(s * block_scores.numel()))).reshape(block_scores.shape)
        return keep_blocks[:, None, :, None].expand(-1, self.rows, -1, self.cols).reshape(r, c)

    def check(self, weight, sparsity=None, strict=True):
        mat = to_matrix(_as_tensor(weight))
        r, c = mat.shape
        zeros = float((mat == 0).float().mean()) if mat.numel() else 0.0
        if r % self.rows or c % self.cols:
            return PatternCheck(self.name, (r, c), False, zeros, 0, 0, f"{r}x{c} not divisible into {self.rows}x{self.cols}")
        zero_per_block = (self._tiles(mat) == 0).sum(dim=(1, 3))
        size = self.rows * self.cols
        n_blocks = zero_per_block.numel()
        full = int((zero_per_block == size).sum())
        partial = int(((zero_per_block > 0) & (zero_per_block < size)).sum())
        block_sparsity = full / max(1, n_blocks)
        ok = (partial == 0 or not strict) and (sparsity is None or block_sparsity >= sparsity - 1e-3)
        detail = f"{full} of {n_blocks} blocks all-zero ({block_sparsity:.1%})"
        if partial:
            detail += f"; {partial} blocks partly zero" + ("" if strict else " (incidental zeros allowed)")
        return PatternCheck(self.name, (r, c), ok, zeros, n_blocks, partial if strict else 0, detail)

    def compressed_bytes(self, numel, nnz, bytes_per_value):
        # kept blocks stored dense plus one bit per block
        size = self.rows * self.cols
        kept_blocks = math.ceil(nnz / size)
        return int(math.ceil(kept_blocks * size * bytes_per_value + numel / size / 8))


# -- parsing --------------------------------------------------------------------------

_NM_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_BLOCK_RE = re.compile(r"^\s*block\s*[_-]?(\d+)\s*[x×]\s*(\d+)\s*$", re.I)


def parse_pattern(spec: "str | SparsityPattern") -> SparsityPattern:
    """'unstructured' | 'N:M' (e.g. '2:4') | 'blockRxC' (e.g. 'block4x4') -> SparsityPattern."""
    if isinstance(spec, SparsityPattern):
        return spec
    text = str(spec).strip()
    if text.lower() in ("unstructured", "none", "elementwise"):
        return Unstructured()
    if m := _NM_RE.match(text):
        return NM(int(m[1]), int(m[2]))
    if m := _BLOCK_RE.match(text):
        return Block(int(m[1]), int(m[2]))
    raise SparsityError(f"unknown sparsity pattern '{spec}'", hint="use 'unstructured', 'N:M' such as '2:4', or 'blockRxC' such as 'block4x4'")


__all__ = ["SparsityPattern", "Unstructured", "NM", "Block", "PatternCheck", "parse_pattern", "to_matrix", "from_matrix"]
