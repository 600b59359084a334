"""The optimize loop as a pipeline of named passes over one `Search` state (one OptimizeConfig, one Target).

    attention -> export_dense -> find_layers -> price_layers -> precision -> anchor -> plan -> attempts -> retime
    -> result

Each pass reads what the earlier ones left on the state and adds its own part; the decisions themselves (budget
checks, re-planning, choosing the attempt to return) live in run.py and core.py.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from edgeprune.measurement.latency import WholeModelFit
from edgeprune.optimizer.attention import decide_attention, with_layers
from edgeprune.optimizer.config import OptimizeConfig
from edgeprune.optimizer.core import (Attempt, OptimizeResult, _anchor_fit, _budget_fraction,
                                      _joint_cost, _layer_costs, _measure_against_dense, _plan_groups, _touches_convs,
                                      apply_plan)
from edgeprune.optimizer.job import Job
from edgeprune.optimizer.planner import Plan, choose_pattern
from edgeprune.optimizer.precision import PrecisionChoice, build, choose_precision, score_artifact, wanted
from edgeprune.optimizer.run import (reaches, _best_attempt, _build_plan_or_explain, _replan_if_off, _rescale_to_now,
                                     _retime_side_by_side, _retimed_note)
from edgeprune.optimizer.shapes import group_layers, record_shapes
from edgeprune.targets.target import Target


@dataclasses.dataclass
class Search:
    """What the passes share. Latencies in seconds: `layer_s` is the per-layer table (or roofline), `fixed` the cost of
    everything the plan does not touch, `fit` maps table seconds to measured ones (identity when nothing is timed)."""

    model: torch.nn.Module
    example_inputs: tuple
    config: OptimizeConfig
    job: Job
    target: Target
    t_start: float
    work: Path = Path()
    tmp: Any = None  # the TemporaryDirectory that holds the exports (kept alive with the result)
    attention: dict[str, Any] | None = None
    dense_onnx: Path = Path()
    feeds: dict[str, Any] = dataclasses.field(default_factory=dict)
    groups: list = dataclasses.field(default_factory=list)
    records: dict = dataclasses.field(default_factory=dict)
    step_for: Callable[[Any], int] = lambda g: 1
    layer_s: Callable = None
    dense_cost: float = 0.0
    dense_ms: float | None = None
    fraction: float = 1.0
    fixed: float = 0.0
    total_dense: float = 0.0
    fit: WholeModelFit | None = None
    context: dict[str, Any] | None = None
    options: list = dataclasses.field(default_factory=list)
    plan: Plan | None = None
    attempts: list[Attempt] = dataclasses.field(default_factory=list)
    kept: list = dataclasses.field(default_factory=list)  # (pruned model, its ONNX, its bench results) per attempt
    precision: PrecisionChoice | None = None  # what ships beside pruning (precision.py); fraction is then pruning's
    overall_fraction: float = 1.0  # the whole budget (pruning and precision together), as a fraction of dense

    @property
    def precision_alone(self) -> bool:
        """The precision step measured its artifact (beside dense) on the whole budget: nothing is pruned, and a later
        timing of that same artifact does not re-open the split (one noisy round of it had MiniLM/ORT pruned at 2x)."""
        choice = self.precision
        return bool(choice is not None and choice.candidate is not None and choice.speedup
                    and reaches(choice.speedup, 1.0 / self.overall_fraction))

    @property
    def measured(self) -> bool:
        return self.target.measurable

    @property
    def runtime(self) -> str:
        return self.target.runtime

    def joint_total(self, keep: dict[str, int]) -> float:
        """Table seconds of the whole model at these widths: every touched layer once, at all groups' widths."""
        return self.fixed + _joint_cost(self.groups, self.records, keep, self.layer_s)


def attention(s: Search) -> None:
    """Decided first (a bad value fails before any measuring), on the dense layer shape (see attention.py)."""
    s.attention = decide_attention(s.model, s.example_inputs, s.config.attention, s.target, measured=s.measured,
                                   threads=s.config.threads, say=s.job.say)


def export_dense(s: Search) -> None:
    from edgeprune.exporter import export

    s.tmp = tempfile.TemporaryDirectory(prefix="edgeprune-opt-")
    s.work = Path(s.job.workdir or s.tmp.name)
    s.job.say("exporting the dense model")
    s.dense_onnx = s.work / "dense.onnx"
    export(s.model, s.example_inputs, s.dense_onnx, input_names=s.job.input_names)
    s.feeds = {n: t.numpy() for n, t in zip(s.job.input_names, s.example_inputs)}


def find_layers(s: Search) -> None:
    """The prunable groups, each layer's shape at the example inputs, and the width step the target wants."""
    from edgeprune.pruning.apply import find_groups
    from edgeprune.pruning.config import StructuredConfig

    s.job.say("finding prunable groups and their layer shapes")
    s.groups = find_groups(s.model, s.example_inputs, StructuredConfig(unit="auto"))
    modules = {c.name: c.module for g in s.groups for c in g.consumers}
    modules.update({p.name: p.module for g in s.groups for p in g.producers})
    shapes = record_shapes(s.model, modules, s.example_inputs)
    s.records = {g.name: group_layers(g, shapes) for g in s.groups}
    multiple = s.target.channel_multiple("fp32")
    # kept widths in units: features must land on the channel multiple
    s.step_for = lambda g: max(1, multiple // math.gcd(multiple, g.unit_width))


def price_layers(s: Search) -> None:
    """Per-layer seconds at every candidate width; on the host, checked against the dense model timed now."""
    cfg, say = s.config, s.job.say
    say(f"{'measuring' if s.measured else 'estimating'} per-layer latency on {s.runtime}")
    s.layer_s = _layer_costs(s.groups, s.records, s.target, s.measured, cfg.threads, cfg.max_candidates, s.step_for)
    s.dense_cost = _joint_cost(s.groups, s.records, {}, s.layer_s)
    if s.measured:
        from edgeprune.measurement.place import time_files

        s.dense_ms = time_files([("dense", s.dense_onnx)], s.runtime, s.feeds, cfg.threads, warmup=10,
                                iters=cfg.iters // 2, rounds=cfg.rounds)[0].stats.p50
        s.layer_s, s.dense_cost = _rescale_to_now(s.groups, s.records, s.layer_s, s.dense_cost, s.target, cfg.threads, say)
        # (convs alone are expected to cost more than in the model: the anchors' context correction rescales them)
        if s.dense_cost > 1.1 * s.dense_ms / 1e3 and not _touches_convs(s.records):
            # The touched layers alone cannot cost more than the whole model: the (cached) table was
            # measured under other load or on another setup. Re-measure it rather than plan on it.
            say("latency table disagrees with the measured model by >10%: re-measuring it")
            s.layer_s = _layer_costs(s.groups, s.records, s.target, s.measured, cfg.threads, cfg.max_candidates,
                                     s.step_for, fresh=True)
            s.dense_cost = _joint_cost(s.groups, s.records, {}, s.layer_s)
    s.fraction = _budget_fraction(cfg.speedup, cfg.latency_ms, cfg.macs_ratio, s.dense_ms)
    # Everything the plan does not touch keeps its cost: measured dense minus the touched layers' share.
    s.fixed = max(0.0, (s.dense_ms / 1e3) - s.dense_cost) if s.dense_ms else 0.0
    s.total_dense = s.fixed + s.dense_cost


def anchor(s: Search) -> None:
    """The table-to-measured map: identity for estimates, else fitted on whole-model timings at anchor widths."""
    s.fit = WholeModelFit.from_points([(s.total_dense, s.total_dense)])  # identity: roofline / imported tables
    if not s.measured or s.precision_alone:  # nothing will be pruned: no map from widths to time is needed
        return
    cfg, say = s.config, s.job.say
    say(f"timing the whole model at anchor widths on {s.runtime} (calibrates the layer table)")
    s.fit, s.layer_s, s.fixed, s.context = _anchor_fit(
        s.model, s.example_inputs, s.job.input_names, s.groups, s.records, s.layer_s, s.dense_ms / 1e3, s.step_for,
        s.dense_onnx, s.runtime, s.feeds, cfg.threads, s.work, cfg.rounds, cfg.iters)
    s.total_dense = s.fixed + _joint_cost(s.groups, s.records, {}, s.layer_s)
    if s.context:
        c = s.context
        say(f"in-context conv times ({c['layers']} convs profiled): standalone x {c['rho_median']:.2f} "
            f"median ({c['rho_min']:.2f}-{c['rho_max']:.2f})")


def plan(s: Search) -> None:
    """Score units, then the widths that fit the budget (in table seconds, mapped back from measured ones)."""
    cfg = s.config
    s.job.say("scoring units")
    options = _plan_groups(s.model, s.example_inputs, s.job.calib_batches, cfg.importance, s.step_for, s.layer_s,
                           s.records, s.groups, cfg.max_candidates, cfg.allocation)
    pattern, why = choose_pattern(s.target, "fp32")
    s.options = [dataclasses.replace(o, pattern=pattern, pattern_reason=why) for o in options]
    budget = s.fit.inverse(s.fraction * s.fit(s.total_dense))
    s.plan = _build_plan_or_explain(s.options, budget, s.fixed, s.fit, s.total_dense, model=s.job.model_name,
                                    profile=s.target.name, runtime=s.runtime, importance=cfg.importance,
                                    total_s=s.joint_total)
    joint = s.joint_total(s.plan.keep())
    s.plan.predicted_s, s.plan.dense_predicted_s = s.fit(joint), s.fit(s.total_dense)
    s.plan.budget_s = s.fraction * s.fit(s.total_dense)
    s.plan.attention = s.attention  # apply_plan applies it after pruning


def attempts(s: Search) -> None:
    """Prune, time, (re-plan or) recover and score, backing off a plan that loses too much, up to max_rounds."""
    cfg = s.config
    keep, frozen, measured_plans = s.job.resume_keep or s.plan.keep(), set(), []
    # stacked with a reduced precision, a re-plan moves two factors: the widths and the precision's gain on them,
    # which shrinks as the GEMMs shrink (MiniLM/ORT, 2.5x asked: INT8 1.93x on dense, ~1.7x on the plan), so one
    # more measured re-plan is allowed
    stacking = s.measured and s.precision is not None and s.precision.candidate is not None
    max_rounds = cfg.max_rounds + (1 if stacking else 0)
    for round_i in range(max_rounds):
        last = round_i == max_rounds - 1
        attempt, tried = _prune_and_time(s, round_i, keep)
        resuming = s.job.resume_keep is not None and round_i == 0  # the interrupted plan is recovered, not re-planned
        if s.measured and cfg.macs_ratio is None and not frozen and not last and not resuming and not s.precision_alone:
            # Speed is fixed by the widths, so a plan off its budget is re-planned before any recovery is spent on it.
            replanned = _replan_if_off(s.fraction, s.fit, keep, s.fixed, s.total_dense, s.options, s.job.model_name,
                                       s.plan, cfg.importance, s.joint_total, attempt, measured_plans)
            if replanned is not None:
                attempt.note += " (not recovered or scored: its speed missed the budget)"
                s.attempts.append(attempt)
                s.kept.append(tried)
                s.fit, keep = replanned
                continue
        _recover_and_score(s, attempt, tried, keep)
        s.attempts.append(attempt)
        s.kept.append(tried)
        if last or attempt.drop_ok or not _back_off(s, keep, frozen):
            break


def _prune_and_time(s: Search, round_i: int, keep: dict[str, int]) -> tuple[Attempt, tuple]:
    """The attempt at these widths, pruned with compensation, exported and (on the host) timed beside dense."""
    from edgeprune.exporter import export

    say, names = s.job.say, s.job.input_names
    say(f"pruning (round {round_i + 1}) with compensation")
    current = dataclasses.replace(s.plan, groups=[dict(g, keep=keep[g["name"]]) for g in s.plan.groups])
    pruned = apply_plan(current, s.model, s.example_inputs, calib=s.job.calib_batches)
    pruned_onnx = s.work / f"optimized_{round_i}.onnx"
    say("exporting and validating the optimized model")
    export(pruned, s.example_inputs, pruned_onnx, input_names=names)
    # The model predicts a latency ratio; the absolute ms come from the dense model timed in the
    # same interleaved run as the candidate (the machine's speed drifts between phases).
    ratio = s.fit(s.joint_total(keep)) / s.fit(s.total_dense)
    predicted = ratio * s.fit(s.total_dense) * 1e3
    candidate = s.precision.candidate if s.precision else None
    artifact = build(pruned_onnx, candidate, s.runtime, s.job.calib, s.work / f"optimized_{round_i}_{candidate.precision}") \
        if candidate else None
    measured_ms, spd, stacked, bench = None, None, None, []
    if s.measured:
        say(f"measuring dense vs optimized on {s.runtime}" + (f" (FP32 and {candidate.label})" if candidate else ""))
        cfg = s.config
        bench, spds = _measure_against_dense(s.dense_onnx, [pruned_onnx] + ([artifact] if artifact else []), s.runtime,
                                             s.feeds, cfg.threads, cfg.rounds, cfg.iters)
        spd, stacked = spds[0], (spds[1] if artifact else None)
        measured_ms = bench[1].stats.p50
        predicted = ratio * bench[0].stats.p50
        if stacked and not s.precision_alone:  # precision's share measured on these widths: pruning's budget follows it
            s.fraction = min(1.0, s.overall_fraction * stacked["median"] / spd["median"])
            if reaches(stacked, 1.0 / s.overall_fraction):  # the shipped artifact is on budget: so are these widths
                s.fraction = min(1.0, 1.0 / spd["median"])
    attempt = Attempt(dict(keep), predicted, measured_ms, spd, None, None, False, "", False, predicted_ratio=ratio,
                      stacked=stacked, stacked_ms=bench[2].stats.p50 if stacked else None, artifact=artifact)
    return attempt, (pruned, pruned_onnx, bench)


def _recover_and_score(s: Search, attempt: Attempt, tried: tuple, keep: dict[str, int]) -> None:
    from edgeprune.exporter import export

    pruned, pruned_onnx, _ = tried
    score, recovery = s.job.recover(pruned, keep)
    if recovery["stages"][-1]["stage"] != "compensation":  # recovery changed the weights: export them again
        export(pruned, s.example_inputs, pruned_onnx, input_names=s.job.input_names)
    if attempt.artifact is not None:  # quantized after pruning, compensation and recovery; the artifact is scored
        candidate = s.precision.candidate
        attempt.artifact = build(pruned_onnx, candidate, s.runtime, s.job.calib, attempt.artifact.with_suffix(""))
        quantized = score_artifact(s, attempt.artifact)
        if quantized is not None:
            attempt.fp32_score, score = score, quantized
    drop = s.job.drop(score)
    ok = drop <= s.job.max_drop
    attempt.score, attempt.drop, attempt.accepted, attempt.drop_ok, attempt.recovery = score, drop, ok, ok, recovery
    attempt.note = "accepted" if ok else f"drop {drop:.2f} > max_drop {s.job.max_drop}: backing off"


def _back_off(s: Search, keep: dict[str, int], frozen: set[str]) -> bool:
    """Restore the quarter of the cut groups that lost the most importance (their units mattered most); False
    when none is left to restore."""
    lost = sorted((o for o in s.options if keep[o.name] < o.width and o.name not in frozen),
                  key=lambda o: o.value(keep[o.name]))
    if not lost:
        return False
    for o in lost[: max(1, len(lost) // 4)]:
        keep[o.name] = o.width
        frozen.add(o.name)
    return True


def retime(s: Search) -> None:
    if s.measured:
        cfg = s.config
        _retime_side_by_side(s.attempts, s.kept, s.dense_onnx, s.runtime, s.feeds, cfg.threads, cfg.rounds, cfg.iters,
                             s.job.say)


def result(s: Search) -> OptimizeResult:
    """The attempt to return (moved last), its final plan, counts and the run's record."""
    from edgeprune.measurement.counting import count

    cfg, attempts = s.config, s.attempts
    best = _best_attempt(attempts, s.fraction if s.measured and cfg.macs_ratio is None else None)
    pruned, pruned_onnx, bench = s.kept[best]
    keep = dict(attempts[best].keep)
    if best != len(attempts) - 1:
        attempts[best].accepted = True
        attempts[best].note = ("returned: met the measured budget with the best score of the attempts"
                               + _retimed_note(attempts[best]))
        attempts.append(attempts.pop(best))  # the returned attempt is the last one, as everywhere else
    last = attempts[-1]
    if not last.accepted:
        last.note = (f"drop {last.drop:.2f} > max_drop {s.job.max_drop} after {len(attempts)} attempt(s): no configuration "
                     "met both; returned the last (least pruned) one. Raise --max-drop or --recover-minutes, or lower --speedup")
    groups = [dict(g, keep=keep[g["name"]], predicted_ms=g["predicted_ms_dense"] if keep[g["name"]] == g["width"]
                   else g["predicted_ms"]) for g in s.plan.groups]
    # predicted_s: the planner's own prediction, in the same units as budget_s (the attempts carry the one anchored
    # to the dense model timed beside them)
    final_plan = dataclasses.replace(s.plan, groups=groups, predicted_s=s.fit(s.joint_total(keep)),
                                     attention=with_layers(s.plan.attention, pruned))
    counts = {"dense": dataclasses.asdict(count(s.model, s.example_inputs)),
              "optimized": dataclasses.asdict(count(pruned, s.example_inputs))}
    out = OptimizeResult(pruned, final_plan, s.dense_ms, last.measured_ms, last.speedup, last.predicted_ms,
                         s.job.score_dense, last.score, attempts, counts, time.perf_counter() - s.t_start, s.runtime,
                         final_plan.profile, pruned_onnx, bench, s.context)
    out._tmp = s.tmp  # keep exported files alive with the result
    if s.precision is not None and s.precision.candidate is not None:
        out.precision, out.artifact_path = s.precision.to_dict(), last.artifact
        if last.stacked:  # what ships is the stacked artifact: its speed, and its predicted speed, are the result's
            out.speedup, out.optimized_ms = last.stacked, last.stacked_ms
            # predicted: the latency model's pruning ratio, divided by the precision's speedup measured on the dense
            # model (INT8 alone, nothing pruned, MiniLM/ORT: 1.86x predicted where the artifact measured 1.91x)
            factor = s.precision.factor()
            out.predicted_ms = last.predicted_ms / factor
            out.predicted_speedup = factor / last.predicted_ratio if last.predicted_ratio else None
    elif s.precision is not None:
        out.precision = s.precision.to_dict()
    job = s.job
    out.metric, out.data, out.calib_data, out.max_drop = job.metric_name, job.data_summary, job.calib, job.max_drop
    return out


PASSES = (attention, export_dense, find_layers, price_layers, choose_precision, anchor, plan, attempts, retime)


def search(model: torch.nn.Module, example_inputs: tuple, config: OptimizeConfig, job: Job) -> OptimizeResult:
    """Find per-group widths that meet config's budget on its target's runtime with the least importance lost;
    every attempt is pruned with compensation, recovered (job.recover) and scored on held-out data (job.score).

    The attention decision ("auto": block-sparse attention after pruning where the latency model says it pays at
    the model's length; "off": never) is recorded in plan.attention.
    """
    state = Search(model.eval(), example_inputs, config, job, config.target(), time.perf_counter())
    if config.precision != "fp32":
        wanted(state.target, config.precision)  # a precision the target cannot ship fails before anything is timed
    for step in PASSES:
        step(state)
    return result(state)
