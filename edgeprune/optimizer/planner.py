"""Latency-budget planner (HALP-style knapsack, solved greedily) and the plan document.

Each prunable group (a conv channel group, an attention block's heads, an FFN's hidden units) offers
kept widths on the runtime's staircase: multiples of the profile's channel multiple (in units), never
below `min_keep`. Keeping the first k units (by importance, descending) is worth V(k) = sum of their
normalised scores and costs T(k) seconds by the latency model. Starting from the dense model we
repeatedly take the step-down, over all groups and all lower widths, that loses the least value per
second saved, until the predicted total fits the budget. Looking past the next width matters: on a
staircase the next width often saves nothing, and a greedy that only looks one step would stall.
The last step-down can land far below the budget (a heads group going from 12 to 1 at once), so a fill
pass then widens groups again, most value per second first, while the total still fits.
"""
from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from edgeprune import precisions
from edgeprune.errors import ConfigError

if TYPE_CHECKING:
    from edgeprune.targets.target import Target

PLAN_VERSION = 1


@dataclasses.dataclass(frozen=True)
class GroupOption:
    """One prunable group as the planner sees it."""

    name: str
    width: int  # units now (channels, heads or FFN units)
    scores: tuple[float, ...]  # importance per unit, any order; higher = keep
    latency_s: Callable[[int], float]  # predicted seconds of the group's layers at k kept units
    step: int = 1  # kept widths are multiples of this (profile channel multiple, in units)
    min_keep: int = 1
    unit: str = "channels"
    pattern: str = "dense"  # pattern chosen for its layers (see choose_pattern)
    pattern_reason: str = ""

    def widths(self) -> list[int]:
        """Allowed kept widths, descending: the full width, then multiples of step down to min_keep."""
        ws = {self.width}
        k = (self.width // self.step) * self.step
        while k >= max(self.min_keep, 1):
            ws.add(k)
            k -= self.step
        return sorted((w for w in ws if w >= self.min_keep), reverse=True)

    def value(self, k: int) -> float:
        """Normalised importance kept by the top-k units (1.0 at full width)."""
        ordered = sorted(self.scores, reverse=True)
        total = sum(ordered) or 1.0
        return sum(ordered[:k]) / total


@dataclasses.dataclass
class Plan:
    """The plan document (plan.json): readable, editable, re-applicable with `edgeprune apply`."""

    model: str
    profile: str
    runtime: str
    budget_s: float
    fixed_s: float  # predicted seconds of everything the plan does not prune
    groups: list[dict[str, Any]]  # name, unit, width, keep, pattern, predicted_ms (dense, kept), value, reason
    predicted_s: float
    dense_predicted_s: float
    seed: int = 0
    importance: str = "numerical"
    version: int = PLAN_VERSION
    # sparse-attention decision (edgeprune/optimizer/attention.py); None: not considered
    attention: dict[str, Any] | None = None

    def keep(self) -> dict[str, int]:
        return {g["name"]: int(g["keep"]) for g in self.groups}

    def per_layer_ratios(self) -> dict[str, float]:
        """Per-group removal ratios for StructuredConfig(per_layer=...)."""
        return {g["name"]: 1.0 - g["keep"] / g["width"] for g in self.groups if g["keep"] < g["width"]}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str, where: str = "plan.json") -> "Plan":
        try:
            doc = json.loads(text)
        except ValueError as err:
            raise ConfigError(f"{where} is not JSON: {err}", hint="fix the file or re-run `edgeprune optimize`") from err
        if not isinstance(doc, dict):
            raise ConfigError(f"{where} must hold a JSON object", hint="use a plan written by `edgeprune optimize`")
        if doc.get("version") != PLAN_VERSION:
            raise ConfigError(f"{where}: field 'version' is {doc.get('version')!r}, expected {PLAN_VERSION}",
                              hint="re-create the plan with this edgeprune version")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in doc and f.default is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{where}: missing field(s) {missing}", hint="use a plan written by `edgeprune optimize`")
        plan = cls(**{f.name: doc[f.name] for f in dataclasses.fields(cls) if f.name in doc})
        if plan.attention is not None and not isinstance(plan.attention, dict):
            raise ConfigError(f"{where}: field 'attention' must be an object or null", hint="use a plan written by `edgeprune optimize`")
        for i, g in enumerate(plan.groups):
            for key in ("name", "width", "keep"):
                if key not in g:
                    raise ConfigError(f"{where}: field 'groups.{i}.{key}' is missing", hint="every group needs name, width, keep")
            if not isinstance(g["keep"], int) or not 1 <= g["keep"] <= g["width"]:
                raise ConfigError(f"{where}: field 'groups.{i}.keep' ({g['name']}) is {g['keep']!r}, must be an integer in [1, {g['width']}]",
                                  hint="edit keep to a width the group can have")
        return plan


def _best_step(groups: Sequence[GroupOption], keep: Mapping[str, int]) -> tuple[str, int] | None:
    """The (group, new width) that loses the least value per second saved; None if nothing saves time."""
    best, best_ratio = None, float("inf")
    for g in groups:
        now = keep[g.name]
        t_now, v_now = g.latency_s(now), g.value(now)
        for k in g.widths():
            if k >= now:
                continue
            saved = t_now - g.latency_s(k)
            if saved <= 1e-12:
                continue
            ratio = (v_now - g.value(k)) / saved
            if ratio < best_ratio - 1e-15:
                best, best_ratio = (g.name, k), ratio
    return best


def plan_widths(groups: Sequence[GroupOption], budget_s: float, fixed_s: float = 0.0,
                total_s: Callable[[Mapping[str, int]], float] | None = None) -> dict[str, int]:
    """Kept width per group so that the predicted total <= budget_s, keeping the most importance.

    total_s(keep) is the whole-model prediction when groups share layers (a CNN's conv is one group's
    producer and the next group's consumer: summing per-group curves would count it twice and
    over-prune); without it, fixed_s + the sum of the group curves.
    """
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ConfigError("duplicate group names in the plan", hint="each prunable group needs a unique name")
    keep = {g.name: g.width for g in groups}
    by_name = {g.name: g for g in groups}

    def total_of(widths: Mapping[str, int]) -> float:
        if total_s is not None:
            return total_s(widths)
        return fixed_s + sum(by_name[n].latency_s(k) for n, k in widths.items())

    while total_of(keep) > budget_s:
        step = _best_step(groups, keep)
        if step is None:
            floor = total_of(keep)
            dense = total_of({g.name: g.width for g in groups})
            raise ConfigError(f"the budget {budget_s * 1e3:.3f} ms is below what even the smallest allowed model reaches "
                              f"({floor * 1e3:.3f} ms predicted)",
                              hint=f"ask for at most {dense / floor:.2f}x "
                                   f"speedup or a latency >= {floor * 1e3:.3f} ms")
        keep[step[0]] = step[1]
    return fill_budget(groups, keep, budget_s, total_of)


def fill_budget(groups: Sequence[GroupOption], keep: Mapping[str, int], budget_s: float,
                total: Callable[[Mapping[str, int]], float]) -> dict[str, int]:
    """`keep` widened one allowed width at a time, the step that adds the most value per second first
    (by the group's own curve; the whole-model `total` decides whether it fits), while total <= budget_s.

    Why: the step-down greedy stops at its first fit, and its last step can be large; scaled re-plans snap
    every group at once (four FFNs 832 -> 896 together). Unused budget is speed nobody asked for, paid in
    accuracy: MiniLM/OpenVINO at 2x asked left 7% of the table budget unused and measured 2.5x."""
    keep = dict(keep)
    blocked: set[tuple[str, int]] = set()  # steps that did not fit: a wider step elsewhere only adds time
    while True:
        steps = []
        for g in groups:
            wider = [k for k in g.widths() if k > keep[g.name]]
            if not wider or (g.name, min(wider)) in blocked:
                continue
            k = min(wider)
            added = max(g.latency_s(k) - g.latency_s(keep[g.name]), 1e-12)
            steps.append(((g.value(k) - g.value(keep[g.name])) / added, g.name, k))
        for _, name, k in sorted(steps, key=lambda s: (-s[0], s[1])):
            trial = {**keep, name: k}
            if total(trial) <= budget_s:
                keep = trial
                break
            blocked.add((name, k))
        else:
            return keep


def choose_pattern(target: Target, precision: str) -> tuple[str, str]:
    """The finer pattern to add on top of channel pruning for this target: only one its runtime
    accelerates ("yes") on its device, else dense, with the reason from the profile."""
    runtime = target.runtime
    verdict, reason = target.accelerates("2:4")
    if verdict == "yes" and precisions.get(precision).sparse_tensor_cores:
        return "2:4", f"2:4 accelerated on {runtime}: {reason}"
    if verdict == "yes":
        runs = "/".join(p for p in precisions.names() if precisions.get(p).sparse_tensor_cores)
        return "dense", f"2:4 needs {runs} on {runtime}, plan precision is {precision}"
    return "dense", f"2:4 not accelerated on {runtime} ({verdict}): {reason}"


def build_plan(groups: Sequence[GroupOption], budget_s: float, fixed_s: float, *, model: str, profile: str,
               runtime: str, seed: int = 0, importance: str = "numerical",
               total_s: Callable[[Mapping[str, int]], float] | None = None) -> Plan:
    keep = plan_widths(groups, budget_s, fixed_s, total_s)
    rows = []
    for g in groups:
        k = keep[g.name]
        reason = "kept whole" if k == g.width else f"{g.width}->{k} {g.unit}: least importance lost per ms saved"
        rows.append({"name": g.name, "unit": g.unit, "width": g.width, "keep": k, "step": g.step,
                     "pattern": g.pattern, "pattern_reason": g.pattern_reason,
                     "predicted_ms_dense": g.latency_s(g.width) * 1e3, "predicted_ms": g.latency_s(k) * 1e3,
                     "value_kept": round(g.value(k), 6), "reason": reason})
    if total_s is not None:
        dense, predicted = total_s({g.name: g.width for g in groups}), total_s(keep)
    else:
        dense = fixed_s + sum(g.latency_s(g.width) for g in groups)
        predicted = fixed_s + sum(g.latency_s(keep[g.name]) for g in groups)
    return Plan(model, profile, runtime, budget_s, fixed_s, rows, predicted, dense, seed, importance)
