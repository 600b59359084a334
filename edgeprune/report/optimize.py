"""OUTDIR of `optimize`: plan.json, the model per runtime, report.json (edgeprune.report/1), report.md/html.

The folder is built in a temp dir beside OUTDIR and renamed into place, so an interrupted run never
leaves a half-written OUTDIR.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune._io import atomic_dir

if TYPE_CHECKING:  # the optimizer calls this module; a report never imports the optimizer
    from edgeprune.optimizer.core import OptimizeResult


def report_doc(result: OptimizeResult, model_name: str) -> dict[str, Any]:
    """The optimizer's report.json (schema documented in edgeprune/report/html.py)."""
    from edgeprune.env import environment

    doc: dict[str, Any] = {
        "schema": "edgeprune.report/1", "model": model_name, "profile": result.profile, "runtime": result.runtime,
        "precision": (result.precision or {}).get("precision", "fp32"), "env": environment(), "seconds": round(result.seconds, 1),
        "metric": result.metric, "data": result.data, "max_drop": result.max_drop, "max_drop_met": bool(result.attempts and result.attempts[-1].accepted),
        "score_dense": result.score_dense, "score": result.score, "counts": result.counts,
        "recovery": result.attempts[-1].recovery if result.attempts else None,
        "predicted_ms": result.predicted_ms, "measured_ms": result.optimized_ms, "dense_ms": result.dense_ms,
        "speedup": result.speedup,  # of what ships (a reduced-precision artifact's, where one ships); "speedups": all
        "prediction_error": result.prediction_error,
        "layers": [{"name": g["name"], "orig_width": g["width"], "kept_width": g["keep"], "unit": g["unit"],
                    "pattern": g["pattern"], "pattern_reason": g["pattern_reason"], "time_ms": g["predicted_ms"]}
                   for g in result.plan.groups],
        "configs": [{"name": f"attempt {i + 1}", "accuracy": a.score, "latency_ms": a.measured_ms or a.predicted_ms,
                     "selected": i == len(result.attempts) - 1, "note": a.note, "recovery": a.recovery}
                    for i, a in enumerate(result.attempts)],
        "predicted_vs_measured": [{"name": f"attempt {i + 1}", "predicted_ms": a.predicted_ms, "measured_ms": a.measured_ms}
                                  for i, a in enumerate(result.attempts) if a.measured_ms],
        "attention": result.plan.attention,  # sparse-attention decision: applied, reason, numbers (optimize/attention.py)
        # per-conv rescaling of the standalone layer table by in-context profiles (optimize/context.py); None: not used
        "latency_context": result.latency_context,
        # precision="auto"/"int8"/"fp16": every candidate with its measurement (or "not measured here") and verdict
        "precision_choice": result.precision,
        "artifact": artifact_name(result),
    }
    if result.bench:
        from edgeprune.measurement.bench import compare

        doc["results"] = [r.to_dict() for r in result.bench]
        doc["speedups"] = [s.__dict__ for s in compare(result.bench)]
    return doc


def write_outdir(result: OptimizeResult, outdir: str | Path, model_name: str, convert: bool = True) -> Path:
    """plan.json, model.onnx, the model in every installed runtime's own format (OpenVINO IR: model.xml/.bin),
    report.json/md/html, written into a temporary folder that replaces `outdir` only when complete."""
    from edgeprune.report.html import write_report

    outdir = Path(outdir)
    with atomic_dir(outdir) as tmp:
        (tmp / "plan.json").write_text(result.plan.to_json())
        shutil.copy(result.onnx_path, tmp / "model.onnx")
        if convert:
            _write_conversions(tmp / "model.onnx")
        if result.artifact_path is not None:
            _copy_artifact(result, tmp)
        (tmp / "report.json").write_text(json.dumps(report_doc(result, model_name), indent=2, default=str))
        write_report(tmp, tmp)
    return outdir


def artifact_name(result: OptimizeResult) -> str | None:
    """The shipped reduced-precision artifact's file name in OUTDIR (model_int8.onnx, model_int8.xml), or None."""
    if result.artifact_path is None:
        return None
    return f"model_{result.precision['precision']}{Path(result.artifact_path).suffix}"


def _copy_artifact(result: OptimizeResult, tmp: Path) -> None:
    """The reduced-precision artifact that ships, as model_<precision><suffix> (+ its companions, IR's .bin)."""
    from edgeprune.backends import capabilities

    src, caps = result.artifact_path, capabilities(result.runtime)
    dest = tmp / artifact_name(result)
    shutil.copy(src, dest)
    for companion in caps.companions:
        if src.with_suffix(companion).is_file():
            shutil.copy(src.with_suffix(companion), dest.with_suffix(companion))


def _write_conversions(onnx_path: Path) -> None:
    """model.<suffix> for each available backend whose runtime loads its own format, each validated on it."""
    from edgeprune.backends import backend_classes
    from edgeprune.exporter import convert

    for cls in backend_classes():
        if cls.converts_onnx and cls.available():
            convert(onnx_path, onnx_path.with_suffix(cls.capabilities.artifact_suffix), cls.name)
