"""The optimize loop on small models with real ONNX Runtime measurements and a fake evaluate."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import make_target
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.optimizer import OptimizeConfig, apply_plan, optimize
from edgeprune.recover import RecoverConfig
from edgeprune.optimizer.planner import Plan


class WideMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(64, 512)
        self.down = nn.Linear(512, 64)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "cache"))


def _model():
    torch.manual_seed(0)
    return WideMLP().eval(), (torch.randn(256, 64),)


def _run(evaluate=None, **kw):
    model, inputs = _model()
    calib = [(torch.randn(256, 64, generator=torch.Generator().manual_seed(i)),) for i in range(4)]
    args = dict(profile=make_target("host", multiple=8, reason="ONNX Runtime CPU runs sparse weights dense"), speedup=1.5, threads=1, iters=20, rounds=3,
                recover=RecoverConfig(mode="off"), precision="fp32")  # the pruning loop (auto would ship INT8 alone here)
    args.update(kw)
    return model, inputs, calib, optimize(model, inputs, OptimizeConfig(**args), calib=calib, evaluate=evaluate)


def test_plan_meets_budget_under_its_model_and_apply_reproduces():
    model, inputs, calib, result = _run(max_drop=100.0)
    plan = result.plan
    assert plan.predicted_s <= plan.budget_s * 1.0001
    assert all(g["keep"] % 8 == 0 for g in plan.groups)
    assert result.counts["optimized"]["macs"] < result.counts["dense"]["macs"]
    assert result.speedup is not None and result.speedup["rounds"] == 3
    assert result.optimized_ms is not None and result.prediction_error is not None
    # a quarter of the 1,024 calibration samples held out; compensation takes calib_samples of the rest
    assert result.data["eval"]["samples"] == 256 and result.data["calib"]["samples"] == OptimizeConfig().calib_samples
    again = apply_plan(Plan.from_json(plan.to_json()), model, inputs, calib=result.calib_data)
    assert torch.max(torch.abs(again(*inputs) - result.model(*inputs))).item() <= 1e-6
    assert all(g["pattern"] == "dense" and "not accelerated" in g["pattern_reason"] for g in plan.groups)


def test_backs_off_when_evaluate_reports_a_large_drop():
    scores = iter([100.0, 90.0, 99.5, 99.9])  # dense, attempt 1 (too low), attempt 2 (within 1 point)
    # a MACs budget: no attempt is re-planned on its measured speed, so the attempt list does not depend on timing
    _, _, _, result = _run(evaluate=lambda m: next(scores), max_drop=1.0, max_rounds=3, speedup=None, macs_ratio=0.6)
    assert [a.accepted for a in result.attempts] == [False, True]
    assert result.attempts[0].note.startswith("drop 10.00 > max_drop 1.0")
    kept0, kept1 = sum(result.attempts[0].keep.values()), sum(result.attempts[1].keep.values())
    assert kept1 > kept0  # backing off restores units


@pytest.mark.parametrize("kw, match", [({"speedup": 1.0}, "speedup must be > 1"), ({"speedup": None, "macs_ratio": 1.5}, "macs_ratio"),
                                       ({"speedup": 1.5, "latency_ms": 3.0}, "exactly one budget"),
                                       ({"speedup": 1000.0}, "smallest allowed model reaches")])
def test_bad_budgets(kw, match):
    with pytest.raises(ConfigError, match=match):
        _run(**kw)


def test_cli_writes_outdir(tmp_path):
    from click.testing import CliRunner

    from edgeprune.cli import main

    out = tmp_path / "out"
    spec = f"{__file__}:cli_model"
    result = CliRunner().invoke(main, ["optimize", spec, "--profile", "host", "--speedup", "1.3", "--max-drop", "100",
                                       "--threads", "1", "-o", str(out), "--bundle", str(tmp_path / "b.tar.gz")])
    assert result.exit_code == 0, result.output
    for name in ("plan.json", "model.onnx", "model.xml", "model.bin", "report.json", "report.html", "report.md"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "report.json").read_text())
    assert doc["schema"] == "edgeprune.report/1" and doc["speedups"][0]["rounds"] == 20  # optimize's default: many short rounds
    sp = doc["speedups"][0]
    assert sp["min"] <= sp["ci_low"] <= sp["median"] <= sp["ci_high"] <= sp["max"]  # 20 rounds: x_(6)..x_(15)
    assert "speedup" in result.output
    import tarfile

    with tarfile.open(tmp_path / "b.tar.gz") as tf:
        members = tf.getnames()
    assert any(m.endswith("manifest.json") for m in members) and any(m.endswith("model.onnx") for m in members)
    applied = tmp_path / "applied.onnx"
    result = CliRunner().invoke(main, ["apply", str(out / "plan.json"), spec, "-o", str(applied)])
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(main, ["optimize", spec, "--speedup", "0.5", "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "speedup must be > 1" in bad.output and not (tmp_path / "bad").exists()


def cli_model():
    return _model()


def test_a_measurement_off_the_budget_joins_the_anchors_and_replans():
    from types import SimpleNamespace

    from edgeprune.measurement.latency import WholeModelFit
    from edgeprune.optimizer.run import _replan_if_off
    from edgeprune.optimizer.planner import GroupOption, build_plan

    # one group of 64 units costing 1 ms per 8 kept; the table says the plan (48 kept) runs 6 ms = 0.67x of 9 ms
    opt = GroupOption("g", 64, tuple(float(i) for i in range(64)), lambda k: 1e-3 * k / 8, step=8)
    total = lambda keep: 1e-3 + 1e-3 * keep["g"] / 8  # noqa: E731
    fit = WholeModelFit.from_points([(9e-3, 9e-3)])
    plan = build_plan([opt], 6e-3, 1e-3, model="m", profile="host", runtime="onnxruntime", total_s=total)
    measured = lambda ratio: SimpleNamespace(accepted=True, note="", speedup={"median": 1 / ratio})  # noqa: E731
    attempt = measured(0.8)
    fraction = 6.0 / 9.0
    # measured 0.8 of dense (1.25x) for a 1.5x request: re-plan narrower on the corrected map
    out = _replan_if_off(fraction, fit, plan.keep(), 1e-3, 9e-3, [opt], "m", plan,
                          "numerical", total, attempt)
    assert out is not None
    new_fit, keep = out
    assert keep["g"] < plan.keep()["g"]
    assert new_fit(total(plan.keep())) == pytest.approx(0.8 * 9e-3)  # the measurement is now an anchor
    assert not attempt.accepted and "re-planning" in attempt.note
    # measured within 3% of the budget: nothing to do
    assert _replan_if_off(fraction, fit, plan.keep(), 1e-3, 9e-3, [opt], "m", plan,
                          "numerical", total, measured(0.68)) is None
    # measured 0.3 of dense (3.3x) for the same 1.5x request: pruned more than asked, re-plan wider
    # (the corrected map puts the budget at 8.05 ms of table cost: 56 units fit, 8 more than the plan)
    attempt = measured(0.3)
    out = _replan_if_off(fraction, fit, plan.keep(), 1e-3, 9e-3, [opt], "m", plan,
                         "numerical", total, attempt)
    assert out is not None and out[1]["g"] > plan.keep()["g"]
    assert not attempt.accepted and "wider" in attempt.note


def test_a_replan_maps_through_the_measured_plans_not_the_uniform_anchors():
    from types import SimpleNamespace

    from edgeprune.measurement.latency import WholeModelFit
    from edgeprune.optimizer.run import _replan_if_off
    from edgeprune.optimizer.planner import GroupOption, build_plan

    opt = GroupOption("g", 64, tuple(float(i) for i in range(64)), lambda k: 1e-3 * k / 8, step=8)
    total = lambda keep: 1e-3 + 1e-3 * keep["g"] / 8  # noqa: E731
    # a uniform anchor at 5 ms of table cost measured 3 ms: a plan at 7 ms then measures 8 ms (0.89 of dense)
    fit = WholeModelFit.from_points([(9e-3, 9e-3), (5e-3, 3e-3)])
    plan = build_plan([opt], fit.inverse(6e-3), 1e-3, model="m", profile="host", runtime="onnxruntime", total_s=total)
    assert total(plan.keep()) == pytest.approx(7e-3)
    plans: list = []
    out = _replan_if_off(6.0 / 9.0, fit, plan.keep(), 1e-3, 9e-3, [opt], "m", plan, "numerical", total,
                         SimpleNamespace(accepted=True, note="", speedup={"median": 9 / 8}), plans)
    assert out is not None and plans == [(pytest.approx(7e-3), pytest.approx(8e-3))]
    new_fit, keep = out
    assert new_fit.raw_s == pytest.approx((7e-3, 9e-3))  # dense + the measured plan; the uniform anchor is gone
    # proportional below the plan (6/8 of its 7 ms = 5.25 ms of table cost): 32 units, not the 40 the old map gave
    assert keep["g"] == 32


def test_prediction_error_compares_ratios_to_dense_with_the_median_speedup():
    from edgeprune.optimizer.core import Attempt

    # predicted 0.5 of dense; rounds say 2.2x (median) while pooled p50s (noisy dense) say 4.0 ms vs 10 ms
    a = Attempt({}, 5.0, 4.0, {"median": 2.2, "min": 1.9, "max": 3.0}, 90.0, 1.0, True, predicted_ratio=0.5)
    assert a.prediction_error == pytest.approx(0.1)
    assert Attempt({}, 5.0, 4.0, None, 90.0, 1.0, True).prediction_error == pytest.approx(0.25)  # no rounds: p50s
    assert Attempt({}, 5.0, None, None, 90.0, 1.0, True).prediction_error is None


def test_a_replan_moves_at_most_twice_the_proportional_step():
    from edgeprune.optimizer.run import _bounded_step

    # measured 0.6 of dense for 0.5 asked: proportional step 0.833, so the budget may fall to 0.694 of the plan's
    assert _bounded_step(10.0, 3.0, 0.5 / 0.6) == pytest.approx(10.0 * (0.5 / 0.6) ** 2)
    assert _bounded_step(10.0, 8.0, 0.5 / 0.6) == 8.0  # within the bound: the map's answer stands
    # too fast (0.4 of dense for 0.5 asked): wider, at most 1.25^2 of the plan's cost
    assert _bounded_step(10.0, 30.0, 0.5 / 0.4) == pytest.approx(10.0 * 1.25 ** 2)
    assert _bounded_step(10.0, 11.0, 0.5 / 0.4) == 11.0


def test_the_returned_attempt_met_the_budget_with_the_best_score():
    from edgeprune.optimizer.core import Attempt
    from edgeprune.optimizer.run import _best_attempt

    def attempt(speedup, score, ok=True):
        return Attempt({}, 1.0, 1.0, {"median": speedup}, score, 100 - score, ok, "", ok)

    fraction = 1 / 1.5
    # too fast (low score), then too slow (misses by >3%), then on budget: the third
    assert _best_attempt([attempt(2.0, 80), attempt(1.3, 95), attempt(1.49, 90)], fraction) == 2
    # too fast, then too slow: the fast one met the budget, the slow one did not
    assert _best_attempt([attempt(2.0, 80), attempt(1.3, 95)], fraction) == 0
    # the drop limit still rules: a failing score is never returned over a passing one
    assert _best_attempt([attempt(1.6, 80), attempt(1.5, 95, ok=False)], fraction) == 0
    # nothing met the budget: the last one, as before
    assert _best_attempt([attempt(1.2, 80), attempt(1.3, 95)], fraction) == 1
    # equal scores: the one nearest the budget (EfficientNet-Lite0/OpenVINO returned 1.79x over 1.66x at 12.5 each)
    assert _best_attempt([attempt(1.38, 21.9), attempt(1.79, 12.5), attempt(1.66, 12.5)], fraction) == 2


def test_off_budget_stands_inside_the_median_interval_within_ten_percent():
    from edgeprune.optimizer.run import _off_budget

    fraction = 1 / 1.5
    assert _off_budget({"median": 1.47}, fraction) is None  # 2% slow: within 3%
    assert _off_budget({"median": 1.40}, fraction) == "slow"  # 7% slow, no interval: re-plan
    assert _off_budget({"median": 1.60}, fraction) == "fast"  # 6.7% fast
    # the same medians with rounds too spread to tell them from 1.5x: on budget
    assert _off_budget({"median": 1.40, "ci_low": 1.30, "ci_high": 1.55}, fraction) is None
    assert _off_budget({"median": 1.60, "ci_low": 1.45, "ci_high": 1.70}, fraction) is None
    # a tight interval that excludes 1.5x: re-plan
    assert _off_budget({"median": 1.40, "ci_low": 1.38, "ci_high": 1.42}, fraction) == "slow"
    # more than 10% off re-plans whatever the interval (1.68x for 1.5x is 10.7% of dense latency fast)
    assert _off_budget({"median": 1.68, "ci_low": 1.20, "ci_high": 2.40}, fraction) == "fast"
    assert _off_budget({"median": 1.30, "ci_low": 1.10, "ci_high": 1.60}, fraction) == "slow"


def test_best_attempt_counts_a_miss_inside_the_interval_as_met():
    from edgeprune.optimizer.core import Attempt
    from edgeprune.optimizer.run import _best_attempt

    noisy = Attempt({}, 1.0, 1.0, {"median": 1.40, "ci_low": 1.30, "ci_high": 1.55}, 95, 5, True, "", True)
    fast = Attempt({}, 1.0, 1.0, {"median": 1.70, "ci_low": 1.65, "ci_high": 1.75}, 80, 20, True, "", True)
    assert _best_attempt([fast, noisy], 1 / 1.5) == 1
    tight = Attempt({}, 1.0, 1.0, {"median": 1.40, "ci_low": 1.38, "ci_high": 1.42}, 95, 5, True, "", True)
    assert _best_attempt([fast, tight], 1 / 1.5) == 0


def _attempt_files(tmp_path, widths):
    from edgeprune.exporter import export

    paths = []
    for w in widths:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(64, w), nn.ReLU(), nn.Linear(w, 64)).eval()
        paths.append(tmp_path / f"m{w}.onnx")
        export(m, (torch.randn(8, 64),), paths[-1], input_names=["input_0"])
    return paths


def test_attempts_that_kept_the_score_are_retimed_side_by_side(tmp_path):
    import numpy as np

    from edgeprune.optimizer.core import Attempt
    from edgeprune.optimizer.run import _retime_side_by_side

    dense, wide, narrow, bad = _attempt_files(tmp_path, [512, 256, 64, 32])
    old = {"median": 9.0, "min": 9.0, "max": 9.0, "rounds": 3}
    attempts = [Attempt({}, 1.0, 1.0, dict(old), 90, 1, True, "re-planned", True, predicted_ratio=0.5),
                Attempt({}, 1.0, 1.0, dict(old), 80, 2, True, "accepted", True, predicted_ratio=0.25),
                Attempt({}, 1.0, 1.0, dict(old), 10, 90, False, "drop", False, predicted_ratio=0.1)]
    kept = [(None, wide, ["own run"]), (None, narrow, ["own run"]), (None, bad, ["own run"])]
    said = []
    feeds = {"input_0": np.random.default_rng(0).standard_normal((8, 64), dtype=np.float32)}
    _retime_side_by_side(attempts, kept, dense, "onnxruntime", feeds, 1, 3, 12, said.append)
    assert said == ["re-timing 2 attempts side by side with the dense model on onnxruntime"]
    for a, (_, _, bench) in zip(attempts[:2], kept[:2]):
        assert a.first_speedup == old and a.speedup["rounds"] == 3
        assert a.speedup["min"] <= a.speedup["median"] <= a.speedup["max"] and a.speedup["median"] != 9.0
        assert [r.name for r in bench] == ["dense", "optimized"] and a.measured_ms == bench[1].stats.p50
        assert a.predicted_ms == pytest.approx(a.predicted_ratio * bench[0].stats.p50)  # the ratio made before
        assert "re-timed beside the other attempts: 9.00x ->" in a.note
    assert kept[0][2][0] is kept[1][2][0]  # one dense timing for both: one run
    assert attempts[2].first_speedup is None and attempts[2].speedup == old and kept[2][2] == ["own run"]
    # one attempt that kept the score: nothing to choose between, nothing re-timed
    single = [Attempt({}, 1.0, 1.0, dict(old), 90, 1, True, "accepted", True, predicted_ratio=0.5)]
    _retime_side_by_side(single, [(None, wide, [])], dense, "onnxruntime", feeds, 1, 3, 12, said.append)
    assert single[0].speedup == old and len(said) == 1


def test_a_replan_scales_the_measured_plans_cuts_by_one_factor():
    from edgeprune.optimizer.run import _scaled_keep
    from edgeprune.optimizer.planner import GroupOption

    # a cut 16 of 64, b uncut, c cut 32 of 64; 1 ms per 8 kept units in every group
    opts = [GroupOption(n, 64, tuple(float(i) for i in range(64)), lambda k: 1e-3 * k / 8, step=8, min_keep=8)
            for n in "abc"]
    total = lambda keep: 1e-3 * sum(keep.values()) / 8  # noqa: E731
    keep = {"a": 48, "b": 64, "c": 32}
    assert total(keep) == pytest.approx(18e-3)
    # narrower: 16 ms of table cost = cuts x 1.33 (a 64-21 -> 40 on the step of 8, c 64-43 -> 24)
    narrower = _scaled_keep(opts, keep, 16e-3, total)
    assert narrower == {"a": 40, "b": 64, "c": 24} and total(narrower) <= 16e-3
    # wider: 20 ms = cuts x 0.67 (a -> 56, c -> 40): the least cut within the cost
    wider = _scaled_keep(opts, keep, 20e-3, total)
    assert wider == {"a": 56, "b": 64, "c": 40} and total(wider) <= 20e-3
    # below what scaling reaches (13 ms: c at its minimum of 8 when a is at 32, b uncut): None, plan afresh
    assert _scaled_keep(opts, keep, 12.5e-3, total) is None
    assert total(_scaled_keep(opts, keep, 13.01e-3, total)) == pytest.approx(13e-3)
    assert _scaled_keep(opts, {"a": 64, "b": 64, "c": 64}, 16e-3, total) is None  # nothing cut: no direction
    # equal cuts snap together (a, c 48 -> 40 at once: 18 ms), so the rest of a 19 ms budget is filled by one group
    filled = _scaled_keep(opts, {"a": 48, "b": 64, "c": 48}, 19e-3, total)
    assert filled == {"a": 48, "b": 64, "c": 40} and total(filled) == pytest.approx(19e-3)


@pytest.mark.parametrize("median, lo, hi, met", [(1.29, 1.27, 1.32, True), (1.27, 1.25, 1.31, True),
                                                  (1.25, 1.20, 1.28, False), (1.14, 1.11, 1.19, False)])
def test_targets_are_met_only_when_the_measured_speedup_reaches_the_ask(median, lo, hi, met):
    from types import SimpleNamespace

    from edgeprune.cli.optimize import speed_met

    result = SimpleNamespace(speedup={"median": median, "ci_low": lo, "ci_high": hi})
    assert speed_met(result, OptimizeConfig(speedup=1.3)) is met
    assert speed_met(result, OptimizeConfig(macs_ratio=0.5)) is True  # not a measured-speed budget
