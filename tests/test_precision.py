"""optimize's precision choice (#20): candidates from the runtime and the device facts, measured on the host,
the fastest that pays ships, and pruning is asked only for the rest of the budget. Real ONNX Runtime/OpenVINO."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import edgeprune as ep
from edgeprune.errors import ConfigError
from edgeprune.optimizer import OptimizeConfig
from edgeprune.optimizer.precision import PAYS, decide
from edgeprune.quantize.offer import candidates
from edgeprune.recover import RecoverConfig


def _spd(median, lo, hi):
    return {"median": median, "min": lo, "max": hi, "rounds": 8, "ci_low": lo, "ci_high": hi}


def _row(label, spd, drop):
    return {"label": label, "precision": "int8", "measured": True, "speedup": spd, "score": 100 - drop, "drop": drop,
            "verdict": "", "reason": "facts"}


def test_decide_ships_the_fastest_that_pays_and_declines_a_slowdown():
    # the numbers recorded for MiniLM on an AVX2-only EPYC (quantize_avx2.md): ORT INT8 1.53x, OpenVINO INT8 0.84x
    rows = [_row("ov int8", _spd(0.84, 0.80, 0.88), 0.5), _row("ort dynamic", _spd(1.53, 1.45, 1.60), 2.0),
            _row("ort static", _spd(1.70, 1.62, 1.80), 9.0)]
    best = decide(rows, max_drop=10.0)
    # static is faster but spends 9 of 10 points; dynamic keeps half the drop budget for pruning
    assert best == 1 and rows[1]["verdict"] == "chosen"
    assert rows[0]["verdict"] == "declined" and "0.84x" in rows[0]["reason"] and f">= {PAYS}x" in rows[0]["reason"]
    assert rows[2]["verdict"] == "declined" and "faster" in rows[2]["reason"]
    # with a looser limit both keep half of it: the faster one ships
    rows = [_row("ort dynamic", _spd(1.53, 1.45, 1.60), 2.0), _row("ort static", _spd(1.70, 1.62, 1.80), 9.0)]
    assert decide(rows, max_drop=30.0) == 1


def test_decide_needs_the_interval_above_one_and_the_drop_within_limit():
    rows = [_row("noisy", _spd(1.10, 0.95, 1.30), 0.0), _row("lossy", _spd(2.0, 1.9, 2.1), 5.0)]
    assert decide(rows, max_drop=1.0) is None
    assert "does not pay" in rows[0]["reason"] and "drop 5.00 > max_drop 1.0" in rows[1]["reason"]


def test_npu_profile_offers_int8_only():
    found = {c.precision: c for c in candidates(ep.target("intel-npu-3720", "openvino"))}
    assert found["int8"].offered and not found["fp16"].offered
    assert "npu" in found["fp16"].reason and "INT8" in found["fp16"].reason
    with pytest.raises(ConfigError, match="runs INT8 networks"):
        ep.optimize(nn.Linear(8, 8), torch.randn(1, 8), OptimizeConfig(profile="intel-npu-3720", runtime="openvino",
                                                                       precision="fp16"), calib=torch.randn(32, 8))


def test_cpu_facts_decide_off_host_candidates():
    zen3 = {c.label: c for c in candidates(ep.target("epyc-zen3", "openvino"))}
    assert not zen3["NNCF INT8"].offered and "avx2" in zen3["NNCF INT8"].reason  # no VNNI: the flags are the evidence
    spr = {c.label: c for c in candidates(ep.target("xeon-spr", "openvino"))}
    assert spr["NNCF INT8"].offered and "amx_int8" in spr["NNCF INT8"].reason
    arm = {c.label: c for c in candidates(ep.target("graviton2", "onnxruntime"))}
    assert arm["dynamic INT8"].offered and not arm["FP16"].offered  # ORT's CPU EP runs fp16 through casts


def test_config_precision_spellings():
    assert OptimizeConfig(precision="uint8").precision == "int8"
    assert OptimizeConfig(precision="half").precision == "fp16"
    with pytest.raises(ConfigError, match="precision must be auto"):
        OptimizeConfig(precision="int4")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)).eval()


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    cfg = OptimizeConfig(speedup=6.0, runtime="onnxruntime", precision="auto", max_drop=100.0, rounds=6, iters=20,
                         max_rounds=2, recover=RecoverConfig(mode="off"))
    torch.manual_seed(1)
    result = ep.optimize(_mlp(), torch.randn(16, 256), cfg, calib=torch.randn(96, 256), eval_data=torch.randn(64, 256))
    out = result.save(tmp_path_factory.mktemp("prec") / "out", convert=False)
    return result, out


def test_auto_decision_follows_the_recorded_measurements(auto_run):
    result, _ = auto_run
    rows = [r for r in result.precision["candidates"] if r["measured"]]
    assert {r["label"] for r in rows} == {"dynamic INT8", "static QDQ INT8"}  # fp16: this CPU lists none, not built
    cnn_only = next(r for r in result.precision["candidates"] if r["label"] == "static QDQ INT8, input end float")
    assert not cnn_only["measured"] and "for CNNs; this graph reads as generic" in cnn_only["reason"]
    paying = [r for r in rows if r["speedup"]["median"] >= PAYS and r["speedup"]["ci_low"] > 1 and r["drop"] <= 100.0]
    chosen = [r for r in rows if r["verdict"] == "chosen"]
    if not paying:
        assert not chosen and result.precision["precision"] == "fp32" and result.artifact_path is None
        return
    tight = [r for r in paying if r["drop"] <= 50.0] or paying
    assert chosen == [max(tight, key=lambda r: r["speedup"]["median"])]
    for r in rows:
        if r is not chosen[0]:
            assert r["verdict"] == "declined" and f"{r['speedup']['median']:.2f}x" in r["reason"]
    assert result.precision["speedup"] == chosen[0]["speedup"]


def test_budget_split_and_stacked_artifact(auto_run):
    result, out = auto_run
    if result.precision["precision"] == "fp32":
        pytest.skip("no INT8 candidate paid on this CPU: nothing to stack")
    factor = result.precision["speedup"]["median"]
    # the plan was made for the budget precision leaves: 1/6 of dense x the INT8 speedup (at most all of dense)
    assert result.plan.budget_s / result.plan.dense_predicted_s == pytest.approx(min(1.0, factor / 6.0), rel=1e-6)
    last = result.attempts[-1]
    assert last.stacked is not None and result.speedup == last.stacked  # what ships is pruned + quantized
    assert last.fp32_score is not None and result.score == last.score  # the artifact itself was scored
    report = json.loads((out / "report.json").read_text())
    assert report["precision"] == "int8" and report["artifact"] == "model_int8.onnx"
    assert (out / "model_int8.onnx").stat().st_size < 0.5 * (out / "model.onnx").stat().st_size


def test_off_host_is_not_measured(tmp_path):
    cfg = OptimizeConfig(speedup=1.5, profile="intel-npu-3720", runtime="openvino", precision="auto",
                         recover=RecoverConfig(mode="off"), max_drop=100.0)
    result = ep.optimize(_mlp(), torch.randn(1, 256), cfg, calib=torch.randn(64, 256), eval_data=torch.randn(32, 256))
    choice = result.precision
    assert choice["precision"] == "int8" and not choice["measured"] and result.speedup is None
    assert "not measured here" in choice["candidates"][0]["reason"]
    assert result.artifact_path is not None and result.artifact_path.suffix == ".xml"
    assert result.attempts[-1].fp32_score is not None  # the IR was run here (CPU) and scored


def test_bundle_ships_and_the_runner_runs_the_chosen_artifact(auto_run, tmp_path):
    from edgeprune.deploy import bundle as B

    result, out = auto_run
    if result.precision["precision"] == "fp32":
        pytest.skip("no INT8 candidate paid on this CPU: nothing to stack")
    manifest = B.build_bundle(out, tmp_path / "b.tar.gz")
    assert manifest["shipped"] == "model_int8.onnx" and manifest["precision"] == "int8"
    assert manifest["probe"]["computed_with"]["artifact"] == "model_int8.onnx" and manifest["probe"]["atol"] == 5e-2
    root = B.unpack_bundle(tmp_path / "b.tar.gz", tmp_path / "u")
    doc = B.run_bundle_in_process(root, warmup=1, iters=4, rounds=2)
    assert doc["artifact"] == "model_int8.onnx" and doc["precision"] == "int8" and doc["check"]["ok"]
    assert doc["results"][0]["artifact_bytes"] < 0.5 * (out / "model.onnx").stat().st_size


def test_decide_prefers_the_least_drop_when_precision_alone_meets_the_budget():
    rows = [_row("fast", _spd(2.2, 2.1, 2.3), 12.0), _row("careful", _spd(1.6, 1.5, 1.7), 3.0)]
    assert decide(rows, max_drop=30.0, asked=1.5) == 1  # both reach 1.5x alone: the one that loses least
    assert "less drop" in rows[0]["reason"]
    assert decide(rows, max_drop=30.0, asked=2.0) == 0  # only the fast one reaches 2x alone
    assert "short of the 2.00x asked, which another reaches alone" in rows[1]["reason"]  # not "less drop": it has less
    assert decide(rows, max_drop=30.0, asked=3.0) == 0  # neither: the fastest keeping half the drop budget
    tie = [_row("dynamic", _spd(1.91, 1.87, 1.96), 13.38), _row("qdq", _spd(1.39, 1.33, 1.45), 13.32)]
    assert decide(tie, max_drop=30.0, asked=1.3) == 0  # 0.06 apart is one score (< 5% of max_drop): the faster ships
    # reaching the ask alone is judged as an attempt is: 1.95x whose interval holds 2.0 reaches 2.0x (no pruning
    # stacked); 1.91x with the interval 1.87-1.96 does not (1.91 < 0.97 x 2.0, and 2.0 is outside)
    assert decide([_row("int8", _spd(1.95, 1.90, 2.05), 20.0), _row("qdq", _spd(1.2, 1.1, 1.3), 1.0)], 30.0, asked=2.0) == 0
    rows2 = [_row("int8", _spd(1.91, 1.87, 1.96), 20.0), _row("qdq", _spd(1.2, 1.1, 1.3), 1.0)]
    assert decide(rows2, 30.0, asked=2.0) == 1  # neither reaches 2.0x alone: the fastest keeping half the drop budget
    near = [_row("dynamic", _spd(1.91, 1.87, 1.96), 0.38), _row("qdq", _spd(1.39, 1.33, 1.45), 0.32)]
    assert decide(near, max_drop=1.0, asked=1.3) == 1  # with a 1-point limit, 0.06 is told apart (> 0.05)


def test_precision_alone_on_budget_prunes_nothing_when_a_later_timing_of_it_reads_slow(monkeypatch):
    """The precision step timed INT8 on the dense model at 2.0x for 1.5x asked: nothing is pruned. The attempt times
    that same artifact again; here that round reads 0.9x (a noisy VM), which used to re-open the split and prune
    (MiniLM/ORT, 2x asked: INT8 2.08x at the precision step, then 1.81x, then 19% of the MACs pruned at 76 overlap).
    Real ORT timings underneath; only the speedups this test needs are set, so the decision is deterministic."""
    from edgeprune.optimizer import core, passes

    real, calls = core._measure_against_dense, []

    def timed(dense, paths, *args):
        results, speedups = real(dense, paths, *args)
        calls.append(len(paths))
        if len(calls) == 1:  # the precision step: every candidate on the dense model
            return results, [_spd(2.0, 1.9, 2.1) for _ in speedups]
        return results, [_spd(1.0, 0.95, 1.05)] + [_spd(0.9, 0.85, 0.95) for _ in speedups[1:]]

    monkeypatch.setattr(core, "_measure_against_dense", timed)
    monkeypatch.setattr(passes, "_measure_against_dense", timed)
    cfg = OptimizeConfig(speedup=1.5, runtime="onnxruntime", precision="auto", max_drop=100.0, rounds=2, iters=5,
                         max_rounds=3, recover=RecoverConfig(mode="off"))
    said = []
    result = ep.optimize(_mlp(), torch.randn(16, 256), cfg, calib=torch.randn(96, 256), eval_data=torch.randn(64, 256),
                         progress=said.append)
    assert len(calls) == 2 and len(result.attempts) == 1, (calls, [a.note for a in result.attempts])
    assert result.counts["optimized"]["macs"] == result.counts["dense"]["macs"]  # nothing pruned
    assert result.precision["precision"] == "int8" and any("pruning asked for 1.00x" in line for line in said), said
    assert not any("anchor widths" in line for line in said)  # no width-to-time map is timed when nothing is pruned
