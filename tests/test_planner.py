"""The planner meets its budget under its own latency model, respects the staircase, and is deterministic."""
from __future__ import annotations

import math

import pytest
from conftest import make_target

from edgeprune.errors import ConfigError
from edgeprune.optimizer.planner import GroupOption, Plan, build_plan, choose_pattern, fill_budget, plan_widths


def staircase(per_step_s: float, step: int):
    # cost only changes at multiples of `step`: widths in between cost the upper multiple
    return lambda k: per_step_s * math.ceil(k / step)


def groups(step=8):
    return [
        GroupOption("conv1", 64, tuple(float(i) for i in range(64)), staircase(1e-4, step), step=step),
        GroupOption("conv2", 128, tuple(1.0 for _ in range(128)), staircase(2e-4, step), step=step, min_keep=16),
        GroupOption("ffn", 96, tuple(float(96 - i) ** 2 for i in range(96)), staircase(5e-5, step), step=step),
    ]


@pytest.mark.parametrize("fraction", [0.9, 0.7, 0.5, 0.3])
def test_budget_met_under_own_model_and_on_staircase(fraction):
    gs = groups()
    dense = sum(g.latency_s(g.width) for g in gs) + 1e-3
    keep = plan_widths(gs, fraction * dense, fixed_s=1e-3)
    total = 1e-3 + sum(g.latency_s(keep[g.name]) for g in gs)
    assert total <= fraction * dense + 1e-12
    for g in gs:
        assert keep[g.name] % g.step == 0 or keep[g.name] == g.width
        assert keep[g.name] >= g.min_keep


def test_cheap_value_goes_first():
    # conv2's units are all equally (un)important per second; ffn holds steep importance: ffn keeps more
    gs = groups()
    keep = plan_widths(gs, 0.6 * sum(g.latency_s(g.width) for g in gs))
    assert keep["ffn"] / 96 > keep["conv2"] / 128


def test_deterministic():
    gs = groups()
    budget = 0.5 * sum(g.latency_s(g.width) for g in gs)
    assert plan_widths(gs, budget) == plan_widths(groups(), budget)


def test_unreachable_budget_names_best_reachable():
    gs = groups()
    with pytest.raises(ConfigError, match=r"below what even the smallest allowed model reaches \(\d"):
        plan_widths(gs, 1e-9, fixed_s=1e-3)


def test_plan_json_round_trip_and_validation(tmp_path):
    gs = groups()
    plan = build_plan(gs, 0.5 * sum(g.latency_s(g.width) for g in gs), 0.0, model="m", profile="host", runtime="onnxruntime")
    again = Plan.from_json(plan.to_json())
    assert again.keep() == plan.keep() and again.predicted_s <= again.budget_s
    assert all(0 <= r < 1 for r in again.per_layer_ratios().values())
    bad = plan.to_json().replace('"keep": ', '"keep": 100000 + ', 1)
    with pytest.raises(ConfigError):
        Plan.from_json(bad)
    doc = plan.to_json().replace('"version": 1', '"version": 7')
    with pytest.raises(ConfigError, match="field 'version'"):
        Plan.from_json(doc)
    import json

    d = json.loads(plan.to_json())
    d["groups"][0]["keep"] = 0
    with pytest.raises(ConfigError, match="groups.0.keep"):
        Plan.from_json(json.dumps(d))


def test_never_a_pattern_the_runtime_does_not_accelerate():
    t = lambda runtime, verdict, kind="cpu": make_target("dev", runtime, nm=verdict, reason="because", kind=kind)
    assert choose_pattern(t("onnxruntime", "no"), "int8")[0] == "dense"
    assert choose_pattern(t("openvino", "memory-only"), "int8")[0] == "dense"
    assert choose_pattern(t("tensorrt", "yes", "gpu"), "fp32")[0] == "dense"
    assert choose_pattern(t("tensorrt", "yes", "gpu"), "fp16")[0] == "2:4"


def test_joint_total_stops_double_counting_shared_layers():
    # Two groups share one layer (producer of one, consumer of the other): each curve includes it, so
    # the naive sum counts it twice. With the joint total the plan lands on the budget instead of far below.
    shared = 4e-3
    gs = [GroupOption("a", 64, tuple(float(i) for i in range(64)), lambda k: shared * k / 64 + 1e-3 * k / 64, step=8),
          GroupOption("b", 64, tuple(float(i) for i in range(64)), lambda k: shared * k / 64 + 1e-3 * k / 64, step=8)]

    def joint(keep):  # the shared layer scales with both widths (k_a * k_b), each private layer with its own
        return shared * keep["a"] * keep["b"] / 64 ** 2 + 1e-3 * (keep["a"] + keep["b"]) / 64

    budget = 0.6 * joint({"a": 64, "b": 64})
    keep = plan_widths(gs, budget, total_s=joint)
    assert joint(keep) <= budget
    assert joint(keep) >= 0.85 * budget  # the naive sum lands near 0.6 x 0.6 of dense here
    naive = plan_widths(gs, budget)
    assert joint(naive) < 0.8 * budget


def test_fill_uses_the_budget_a_large_last_step_left():
    # heads cost ~sqrt(k) (12 ms dense): per second saved the greedy's best head step is 12 -> 1 at once, and
    # after ffn 64 -> 40 it lands at 8.5 ms for a 12 ms budget. The fill widens back while it fits: heads to
    # 3 (6 ms) and ffn to 48 (6 ms), exactly the budget
    heads = GroupOption("heads", 12, (1.0,) * 12, lambda k: 12e-3 * math.sqrt(k / 12))
    ffn = GroupOption("ffn", 64, tuple(float(64 - i) for i in range(64)), lambda k: 1e-3 * k / 8, step=8)
    total = lambda k: heads.latency_s(k["heads"]) + ffn.latency_s(k["ffn"])  # noqa: E731
    assert total({"heads": 1, "ffn": 40}) == pytest.approx(8.464e-3, abs=1e-6)  # where the greedy alone stops
    keep = plan_widths([heads, ffn], 12e-3)
    assert keep == {"heads": 3, "ffn": 48} and total(keep) == pytest.approx(12e-3)
    assert fill_budget([heads, ffn], {"heads": 1, "ffn": 40}, 12e-3, total) == keep
    assert fill_budget([heads, ffn], {"heads": 1, "ffn": 40}, 8.5e-3, total) == {"heads": 1, "ffn": 40}  # nothing fits
