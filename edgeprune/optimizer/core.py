"""`edgeprune.optimize`: plan -> prune with compensation -> export and validate -> measure -> back off.

The latency model is measured on the host runtime when the host is the target (per-layer tables,
cached), else the profile's roofline. Predictions are ratios: predicted = dense measured latency x
cost(plan) / cost(dense), where cost sums the per-layer table over every layer the plan touches plus
the measured remainder; every prediction is compared with a measurement when one is possible.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from edgeprune.errors import ConfigError
from edgeprune.measurement.latency import LayerShape, measure_layers, roofline_for
from edgeprune.measurement.place import on_target

if TYPE_CHECKING:
    from edgeprune.targets.target import Target
from edgeprune.optimizer.shapes import group_latency_fn, shapes_at
from edgeprune.optimizer.planner import Plan


@dataclasses.dataclass
class Attempt:
    """One configuration tried: its plan, measured latency and accuracy/fidelity."""

    keep: dict[str, int]
    predicted_ms: float
    measured_ms: float | None
    speedup: dict[str, float] | None
    score: float | None  # None: re-planned on its measured speed before it was recovered and scored
    drop: float | None
    accepted: bool
    note: str = ""
    drop_ok: bool = True  # the score drop was within max_drop (accepted may still be False: re-planned)
    predicted_ratio: float | None = None  # predicted latency / dense latency
    first_speedup: dict[str, float] | None = None  # its own run's, when re-timed beside the other attempts (run.py)
    recovery: dict[str, Any] | None = None  # RecoverReport.to_dict(): held-out score and minutes after each stage
    # with a reduced precision (optimizer/precision.py): `speedup` is the FP32 pruned model's (what the latency model
    # and re-planning judge), `stacked` the shipped artifact's (pruned + quantized) vs dense FP32, timed in the same run
    stacked: dict[str, float] | None = None
    stacked_ms: float | None = None
    artifact: Path | None = None  # the pruned + quantized artifact
    fp32_score: float | None = None  # the held-out score before quantization (score is the artifact's)

    @property
    def prediction_error(self) -> float | None:
        """predicted / measured latency - 1, both as ratios to the dense model; measured = the median of the
        per-round ratios (the reported speedup, and what re-planning judges by). Pooled p50s can disagree with
        it on a noisy machine: one round where dense ran slow moves a pooled p50 but not the median ratio."""
        if self.predicted_ratio and self.speedup:
            return self.predicted_ratio * self.speedup["median"] - 1.0
        return self.predicted_ms / self.measured_ms - 1.0 if self.measured_ms else None


@dataclasses.dataclass
class OptimizeResult:
    model: torch.nn.Module
    plan: Plan
    dense_ms: float | None
    optimized_ms: float | None
    speedup: dict[str, float] | None  # median, min, max over interleaved rounds
    predicted_ms: float
    score_dense: float
    score: float
    attempts: list[Attempt]
    counts: dict[str, Any]
    seconds: float
    runtime: str
    profile: str
    onnx_path: Path | None = None
    bench: list[Any] = dataclasses.field(default_factory=list)  # BenchResult dense, optimized
    latency_context: dict[str, Any] | None = None  # the per-conv in-context correction (context.py), if any
    metric: str = "fidelity"  # the held-out metric the scores are in (edgeprune.metrics), or "custom" (evaluate=)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)  # calib/train/eval sources and sample counts
    max_drop: float | None = None  # the drop limit the run used (config's, or the metric's default)
    calib_data: Any = None  # the CalibrationData compensation used: apply_plan(plan, model, inputs, calib=it) reproduces
    precision: dict[str, Any] | None = None  # PrecisionChoice.to_dict(): what ships and every candidate's evidence
    artifact_path: Path | None = None  # the reduced-precision artifact that ships (None: FP32, onnx_path)
    predicted_speedup: float | None = None  # of a shipped reduced-precision artifact: pruning's x precision's

    def save(self, outdir: str | Path, *, convert: bool = True) -> Path:
        """Write the output folder atomically: plan.json, model.onnx, the model in each installed runtime's own
        format (model.xml/.bin for OpenVINO), report.json/md/html. convert=False writes the ONNX file only."""
        from edgeprune.report.optimize import write_outdir

        return write_outdir(self, outdir, self.plan.model, convert=convert)

    @property
    def prediction_error(self) -> float | None:
        """Of the returned attempt (see Attempt.prediction_error)."""
        if not self.optimized_ms:
            return None
        if self.predicted_speedup and self.speedup:  # the shipped artifact's speed, as a ratio to dense
            return self.speedup["median"] / self.predicted_speedup - 1.0
        return self.attempts[-1].prediction_error if self.attempts else self.predicted_ms / self.optimized_ms - 1.0


def _budget_fraction(speedup: float | None, latency_ms: float | None, macs_ratio: float | None, dense_ms: float | None) -> float:
    """The budget as a fraction of the dense latency. The values come from an OptimizeConfig, which already holds
    exactly one finite budget in range (OptimizeConfig._check_budget); only what needs the measured dense time is
    checked here."""
    if speedup is not None:
        return 1.0 / speedup
    if latency_ms is not None:
        if dense_ms is None:
            raise ConfigError("latency_ms needs a measured dense latency (target is not this machine)", hint="use --speedup")
        if latency_ms >= dense_ms:
            raise ConfigError(f"the dense model already runs in {dense_ms:.3f} ms <= {latency_ms} ms", hint="ask for a lower latency")
        return latency_ms / dense_ms
    return macs_ratio


def _layer_costs(groups, records, target: Target, measured: bool, threads: int | None, max_candidates: int,
                 step_for: Callable[[Any], int], fresh: bool = False):
    """Per-layer seconds for every width the planner may pick: measured table or the target's roofline."""
    shapes: set[LayerShape] = set()
    for g in groups:
        step = step_for(g)
        for k in _candidate_widths(g.n_units, step, max_candidates):
            shapes.update(shapes_at(records[g.name], g.n_units - k))
    if measured:
        table = on_target(measure_layers, sorted(shapes, key=LayerShape.key), target,
                          threads=threads, iters=20, rounds=3, fresh=fresh)
        # cost functions take (shape, layer name): the name lets a per-layer correction apply (context.py)
        return lambda s, name=None: (table.get(s) if table.get(s) is not None
                                     else on_target(measure_layers, [s], target, table=table).get(s))
    roof = roofline_for(target, "fp32")
    return lambda s, name=None: roof.layer_s(s)


def _candidate_widths(n: int, step: int, max_candidates: int) -> list[int]:
    """Staircase widths (multiples of step), thinned to at most max_candidates, always incl. full width."""
    coarse = step * max(1, -(-n // (step * max_candidates)))
    return sorted({n, *range(coarse, n, coarse)}, reverse=True)


def _joint_shapes(groups, records, keep: dict[str, int]) -> dict[str, LayerShape]:
    """Every touched layer's shape with all groups' widths applied at once (a layer shared by groups once)."""
    dense: dict[str, LayerShape] = {}
    dn: dict[str, float] = {}
    dk: dict[str, float] = {}
    for g in groups:
        removed = g.n_units - keep.get(g.name, g.n_units)
        for r in records[g.name]:
            dense[r.name] = r.shape
            dn[r.name] = dn.get(r.name, 0.0) + r.n_per_unit * removed
            dk[r.name] = dk.get(r.name, 0.0) + r.k_per_unit * removed
    out = {}
    for name, s in dense.items():
        n = max(1, int(round(s.n - dn[name])))
        k = max(1, int(round(s.k - dk[name])))
        out[name] = dataclasses.replace(s, n=n, k=k, groups=n if s.groups == s.n and s.groups > 1 else s.groups)
    return out


def _touches_convs(records) -> bool:
    """Whether any group narrows a conv: then the standalone table is corrected in context (context.py)."""
    return any(r.shape.kind == "conv" for recs in records.values() for r in recs)


def _joint_cost(groups, records, keep: dict[str, int], layer_s) -> float:
    """Seconds of every touched layer with all groups' widths applied at once. layer_s(shape, layer name)."""
    return sum(layer_s(s, name) for name, s in _joint_shapes(groups, records, keep).items())


def _plan_groups(model, example_inputs, calib_batches, importance: str, step_for, layer_s, records, groups, max_candidates,
                 allocation: str = "sensitivity"):
    """GroupOptions with importance scores (on the dense model), latency curves and, for
    allocation="sensitivity", the measured output error of pruning each group alone."""
    from edgeprune.outputs import flatten_outputs
    from edgeprune.optimizer.sensitivity import SensitiveOption, group_errors
    from edgeprune.pruning import importance as imp
    from edgeprune.pruning.stats import capture

    if allocation not in ("sensitivity", "importance"):
        raise ConfigError(f"unknown allocation '{allocation}'", hint="use 'sensitivity' or 'importance'")
    stats = None
    if imp.needs_stats(importance):
        consumers = {c.name: c.module for g in groups for c in g.consumers}
        stats = capture(model, consumers, calib_batches, 32768, 0)
    scores = {g.name: imp.score(g, importance, stats, 1e-2).double().clamp_min(0).tolist() for g in groups}
    candidates = {g.name: _candidate_widths(g.n_units, step_for(g), max_candidates) for g in groups}
    errors = {}
    if allocation == "sensitivity":
        # 8 samples: ~100 forward passes for a 24-group CNN; the curves only have to rank groups
        probe = tuple(t[:8] if isinstance(t, torch.Tensor) else t for t in calib_batches[0])
        errors = group_errors(model, groups, scores, candidates, probe, lambda out: flatten_outputs(out)[0])
    options = []
    for g in groups:
        step = step_for(g)
        lat = group_latency_fn(records[g.name], g.n_units, layer_s, candidates[g.name])
        options.append(SensitiveOption(g.name, g.n_units, tuple(scores[g.name]), lat, step=step, min_keep=step, unit=g.kind,
                                       candidates=tuple(candidates[g.name]), errors=errors.get(g.name, ())))
    return options


def apply_plan(plan: Plan, model: torch.nn.Module, example_inputs, calib=None, compensate: bool = True) -> torch.nn.Module:
    """Prune `model` to the plan's kept widths (deterministic: same plan, model and calib -> same weights), then
    give it the plan's sparse attention, if any (on the heads pruning left)."""
    from edgeprune.optimizer.attention import apply_attention
    from edgeprune.pruning import StructuredConfig, prune

    ratios = plan.per_layer_ratios()
    _check_plan_fits(plan, model, example_inputs)
    if ratios:
        # every calibration sample given is used (optimize passes OptimizeConfig.calib_samples of them)
        from edgeprune.data import as_data

        calib = as_data(calib, example_inputs) if calib is not None else None
        n_calib = len(calib) if calib is not None else StructuredConfig.n_calib
        config = StructuredConfig(ratio=0.0, per_layer=ratios, unit="auto", importance=plan.importance,
                                  compensate=compensate, seed=plan.seed, n_calib=max(1, n_calib))
        model = prune(model, example_inputs, config, calib=calib)
    return apply_attention(plan.attention, model, example_inputs, calib=calib)


def _check_plan_fits(plan: Plan, model: torch.nn.Module, example_inputs) -> None:
    """Every group of the plan exists in `model` with the plan's width (else it was made for another model)."""
    from edgeprune.pruning import StructuredConfig
    from edgeprune.pruning.apply import find_groups

    if not plan.groups:
        return
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    widths = {g.name: g.n_units for g in find_groups(model, inputs, StructuredConfig(ratio=0.0, unit="auto"))}
    for g in plan.groups:
        if g["name"] not in widths:
            raise ConfigError(f"plan group '{g['name']}' is not a prunable group of this model ({len(widths)} groups, "
                              f"e.g. {', '.join(list(widths)[:3])})", hint="apply the plan to the model it was made for")
        if widths[g["name"]] != g["width"]:
            raise ConfigError(f"plan group '{g['name']}' has width {g['width']}, the model's has {widths[g['name']]}",
                              hint="apply the plan to the model it was made for")


def _speedup_dict(s) -> dict[str, float]:
    """A Speedup's numbers, as attempts and report.json carry them."""
    return {k: v for k, v in dataclasses.asdict(s).items() if k not in ("baseline", "candidate")}


def _measure_against_dense(dense_onnx: Path, paths: Sequence[Path], runtime: str, feeds, threads, rounds: int,
                           iters: int):
    """BenchResults [dense, "optimized" per path] from one interleaved run, and each path's speedup dict."""
    from edgeprune.measurement.bench import compare
    from edgeprune.measurement.place import time_files

    labelled = [("dense", dense_onnx)] + [("optimized", p) for p in paths]
    results = time_files(labelled, runtime, feeds, threads, warmup=10, iters=iters, rounds=rounds)
    return results, [_speedup_dict(s) for s in compare(results)]


def _uniform_keep(groups, step_for, fraction: float) -> dict[str, int]:
    """Every group at about `fraction` of its units, on its step (the channel multiple)."""
    keep = {}
    for g in groups:
        step = step_for(g)
        keep[g.name] = g.n_units if g.n_units % step else min(g.n_units, max(step, int(round(fraction * g.n_units / step)) * step))
    return keep


def _anchor_fit(model, example_inputs, names, groups, records, layer_s, dense_s: float, step_for, dense_onnx: Path,
                runtime: str, feeds, threads, work: Path, rounds: int, iters: int, fractions=(0.7, 0.4)):
    """(WholeModelFit, layer cost, fixed seconds, context summary) from the dense model and uniformly pruned
    anchors timed in one interleaved run; their convs are also profiled in context (context.py) and the
    layer cost is corrected per conv before the fit. fixed = dense_s - the corrected touched layers.

    The anchors only need the right shapes, so they are pruned by magnitude without compensation (seconds).
    Fixed fractions, not placed at the budget: anchors at the budget's table cost (tried) sit close together, so
    anchor noise tilts the map; on MiniLM/ORT that run measured 1.60x for 1.3x asked against 1.32x with these."""
    from edgeprune.exporter import export
    from edgeprune.measurement.latency import WholeModelFit
    from edgeprune.measurement.place import compile_files, time_files
    from edgeprune.optimizer.context import context_correction
    from edgeprune.pruning import StructuredConfig, prune

    keeps: list[dict[str, int]] = [{}]
    paths = [dense_onnx]
    for i, f in enumerate(fractions):
        keep = _uniform_keep(groups, step_for, f)
        ratios = {g.name: 1.0 - keep[g.name] / g.n_units for g in groups if keep[g.name] < g.n_units}
        if not ratios:
            continue
        anchor = prune(model, example_inputs, StructuredConfig(ratio=0.0, per_layer=ratios, unit="auto",
                                                               importance="magnitude", compensate=False))
        paths.append(work / f"anchor_{i}.onnx")
        export(anchor, example_inputs, paths[-1], input_names=names)
        keeps.append(keep)
    labelled = [(f"anchor{i}", path) for i, path in enumerate(paths)]
    # as many iterations as an attempt's measurement: every prediction stands on these three points (at half as
    # many, MiniLM/ORT's first plan once measured 1.65x for 2x asked, the anchors having timed 10 calls a round)
    results = time_files(labelled, runtime, feeds, threads, warmup=10, iters=iters, rounds=rounds)
    measured = [r.stats.p50 / 1e3 for r in results]
    context = None
    if _touches_convs(records):
        # the per-conv profile only splits the timed totals above among convs: it runs where optimize runs
        backends = [sess for _, sess, _ in compile_files(labelled, runtime, feeds, threads)]
        anchors = [(p, _joint_shapes(groups, records, k)) for p, k in zip(paths, keeps)]
        correction = context_correction(model, example_inputs, anchors, backends, feeds, measured, layer_s)
        if correction is not None:
            layer_s, context = correction.apply(layer_s), correction.summary()
    fixed = max(0.0, dense_s - _joint_cost(groups, records, {}, layer_s))
    raws = [fixed + _joint_cost(groups, records, k, layer_s) for k in keeps]
    return WholeModelFit.from_points(zip(raws, measured)), layer_s, fixed, context
