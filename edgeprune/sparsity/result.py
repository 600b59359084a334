"""The honest per-layer report: pattern, sparsity, and per runtime "accelerated" yes/no with the reason.

A layer is "accelerated" on a runtime only when every documented condition holds on this host
(support.layer_verdict); measured evidence (OpenVINO perf-counter exec types, TensorRT sparsity log)
is attached when a run produced it. Where the target only gains memory, the compressed size is given.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

from edgeprune.targets.schema import DeviceProfile
from edgeprune.backends import host_facts
from edgeprune.sparsity.support import HostFacts, sparse_runtimes, Verdict, compressed_bytes, layer_verdict


@dataclasses.dataclass
class LayerResult:
    name: str
    op: str
    weight_shape: tuple[int, ...]
    matrix_shape: tuple[int, int]  # (out, K) as the pattern reads it
    pattern: str
    method: str
    target_sparsity: float
    sparsity: float  # measured fraction of exact zeros
    pattern_ok: bool
    recon_error: float | None = None  # relative ||WX - ŴX||² on calibration inputs (SparseGPT)
    seconds: float = 0.0
    dtype: str = "float32"
    status: str = "sparsified"  # sparsified | skipped
    reason: str = ""  # why skipped
    verdicts: list[Verdict] = dataclasses.field(default_factory=list)

    @classmethod
    def skipped(cls, name: str, mod: Any, reason: str) -> "LayerResult":
        w = mod.weight
        return cls(name, type(mod).__name__, tuple(w.shape), (w.shape[0], int(w.numel() // w.shape[0])), "-", "-", 0.0,
                   float((w == 0).float().mean()), True, status="skipped", reason=reason)

    @property
    def numel(self) -> int:
        return self.matrix_shape[0] * self.matrix_shape[1]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["verdicts"] = [v.to_dict() for v in self.verdicts]
        return d


@dataclasses.dataclass
class SparsityReport:
    config: dict[str, Any]
    layers: list[LayerResult]
    seconds: float
    notes: list[str] = dataclasses.field(default_factory=list)
    allocation: dict[str, Any] | None = None
    calibration_samples: int | None = None
    evidence: dict[str, str] = dataclasses.field(default_factory=dict)  # runtime -> what a measured run showed

    @property
    def sparsified(self) -> list[LayerResult]:
        return [l for l in self.layers if l.status == "sparsified"]

    @property
    def global_sparsity(self) -> float:
        """Zero fraction over all sparsified weights (element-weighted)."""
        rows = self.sparsified
        total = sum(l.numel for l in rows)
        return sum(l.sparsity * l.numel for l in rows) / total if total else 0.0

    @property
    def pattern_ok(self) -> bool:
        return all(l.pattern_ok for l in self.sparsified)

    def assess(self, profile: DeviceProfile | None = None, runtimes: Sequence[str] | None = None, precision: str = "fp32",
               host: HostFacts | None = None, sparse_rate: float = 0.5) -> "SparsityReport":
        """Fill every layer's per-runtime verdicts for weights deployed at `precision` (fp32|fp16|int8)."""
        from edgeprune.sparsity.patterns import parse_pattern

        host = host or host_facts()
        pattern = parse_pattern(self.config["pattern"])
        for layer in self.sparsified:
            layer.verdicts = [layer_verdict(pattern, rt, op=layer.op, matrix_shape=layer.matrix_shape, sparsity=layer.sparsity,
                                            precision=precision, profile=profile, host=host, sparse_rate=sparse_rate)
                              for rt in (runtimes or sparse_runtimes())]
        self.config = dict(self.config, deploy_precision=precision)
        return self

    def summary(self) -> dict[str, Any]:
        """Per runtime: how many layers are accelerated, the most common reason otherwise, memory if memory-only."""
        out = {}
        precision = self.config.get("deploy_precision", "fp32")
        from edgeprune.sparsity.patterns import parse_pattern

        pattern = parse_pattern(self.config["pattern"])
        for rt in {v.runtime for l in self.sparsified for v in l.verdicts}:
            rows = [(l, v) for l in self.sparsified for v in l.verdicts if v.runtime == rt]
            counts: dict[str, int] = {}
            reasons: dict[str, int] = {}
            for _, v in rows:
                counts[v.verdict] = counts.get(v.verdict, 0) + 1
                reasons[v.reason] = reasons.get(v.reason, 0) + 1
            dense = sum(l.numel for l, _ in rows) * {"fp16": 2, "int8": 1}.get(precision, 4)
            packed = sum(compressed_bytes(pattern, l.numel, l.sparsity, precision) for l, _ in rows)
            out[rt] = {"layers": len(rows), "verdicts": counts, "main_reason": max(reasons, key=reasons.get),
                       "dense_weight_bytes": dense, "compressed_weight_bytes": packed, "evidence": self.evidence.get(rt, "")}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "seconds": round(self.seconds, 3), "global_sparsity": self.global_sparsity,
                "pattern_ok": self.pattern_ok, "calibration_samples": self.calibration_samples, "notes": self.notes,
                "allocation": self.allocation, "evidence": self.evidence, "summary": self.summary(),
                "layers": [l.to_dict() for l in self.layers]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def markdown(self) -> str:
        runtimes = sorted({v.runtime for l in self.sparsified for v in l.verdicts})
        head = ["layer", "op", "out x K", "pattern", "method", "sparsity", "pattern ok", "recon err", *(f"{r} accelerated" for r in runtimes)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for l in self.layers:
            verdict = {v.runtime: f"{v.verdict}: {v.reason}" for v in l.verdicts}
            err = f"{l.recon_error:.4f}" if l.recon_error is not None else "-"
            cells = [l.name, l.op, f"{l.matrix_shape[0]}x{l.matrix_shape[1]}", l.pattern, l.method,
                     f"{l.sparsity:.1%}" if l.status == "sparsified" else f"skipped: {l.reason}",
                     "yes" if l.pattern_ok else "NO", err, *(verdict.get(r, "-") for r in runtimes)]
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        lines.append("")
        lines.append(f"Global sparsity {self.global_sparsity:.2%} over {len(self.sparsified)} layers; {self.seconds:.1f} s.")
        for rt, s in self.summary().items():
            lines.append(f"- {rt}: {s['verdicts']}; {s['main_reason']}; weights {s['dense_weight_bytes'] / 2**20:.1f} MiB dense, "
                         f"{s['compressed_weight_bytes'] / 2**20:.1f} MiB if stored compressed" + (f"; evidence: {s['evidence']}" if s["evidence"] else ""))
        lines += [f"- note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def table(self, max_reason: int = 90):
        """A rich table for the terminal (reasons shortened; the JSON has them whole)."""
        from rich.table import Table

        runtimes = sorted({v.runtime for l in self.sparsified for v in l.verdicts})
        table = Table(title=f"sparsity {self.config['pattern']} / {self.config['method']} / {self.config['allocation']}")
        for col in ("layer", "out x K", "sparsity", "ok", "recon err", *runtimes):
            table.add_column(col, justify="left" if col in ("layer", *runtimes) else "right", overflow="fold")
        for l in self.layers:
            verdict = {v.runtime: f"{v.verdict}: {v.reason[:max_reason]}" for v in l.verdicts}
            table.add_row(l.name, f"{l.matrix_shape[0]}x{l.matrix_shape[1]}",
                          f"{l.sparsity:.1%}" if l.status == "sparsified" else "skipped", "yes" if l.pattern_ok else "NO",
                          f"{l.recon_error:.4f}" if l.recon_error is not None else "-", *(verdict.get(r, "-") for r in runtimes))
        return table


__all__ = ["LayerResult", "SparsityReport"]
