"""Latency model: measured per-layer tables (real ORT/OpenVINO), cache, roofline staircase, imported tables."""
from __future__ import annotations

import json

import pytest

from edgeprune.targets.target import Target

from edgeprune.errors import ConfigError
from edgeprune.measurement.latency import (LatencyTable, LayerShape, ModelLatency, Roofline, WholeModelFit, measure_layers,
                               open_table)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path))


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_measured_table_is_cached_and_read_back(runtime):
    # that 16x the MACs costs more is a timing claim: benchmarks/results/optimize.md tests the table's predictions
    shapes = [LayerShape(64, 256, n) for n in (64, 1024)]
    table = measure_layers(shapes, Target.host(runtime), threads=1, iters=12, rounds=2)
    small, big = (table.get(s) for s in shapes)
    assert small > 0 and big > 0 and all(s.key() in table.entries for s in shapes)
    again = open_table("host", runtime, threads=1)
    assert again.get(shapes[1]) == pytest.approx(big)  # read back from the on-disk cache


def test_conv_layers_are_measurable():
    shape = LayerShape(16 * 16, 9 * 8, 16, kind="conv", kernel=3, spatial=16)
    table = measure_layers([shape], Target.host("onnxruntime"), threads=1, iters=6, rounds=2, save=False)
    assert table.get(shape) > 0


def test_roofline_is_a_staircase_on_the_channel_multiple():
    roof = Roofline(peak_ops=1e12, bandwidth=1e11, channel_multiple=16, launch_s=0.0)
    base = LayerShape(128, 384, 1536)
    assert roof.layer_s(base.with_widths(n=1530)) == roof.layer_s(base)  # rounds up to 1536
    assert roof.layer_s(base.with_widths(n=1520)) < roof.layer_s(base)
    compute_bound = Roofline(peak_ops=1e9, bandwidth=1e15, eta_compute=1.0, launch_s=0.0)
    assert compute_bound.layer_s(LayerShape(10, 10, 10)) == pytest.approx(2000 / 1e9)


def test_roofline_fit_matches_measurements():
    roof = Roofline(peak_ops=1e12, bandwidth=1e11, launch_s=0.0)
    shapes = [LayerShape(128, 384, n) for n in (384, 768, 1536)]
    measured = [3 * roof.layer_s(s) for s in shapes]
    fitted = roof.fitted(shapes, measured)
    for s, m in zip(shapes, measured):
        assert fitted.layer_s(s) == pytest.approx(m, rel=1e-6)


def test_model_prediction_replaces_layer_share():
    model = ModelLatency(dense_total_s=10.0, dense_layers_s={"a": 4.0, "b": 2.0})
    assert model.predict({}) == pytest.approx(10.0)
    assert model.predict({"a": 1.0}) == pytest.approx(7.0)


def test_imported_table_round_trip_and_bad_files(tmp_path):
    table = LatencyTable("orin-nano", "tensorrt", "10.3", None, "imported", {LayerShape(1, 2, 3).key(): 1e-4})
    path = table.save(tmp_path / "t.json")
    assert LatencyTable.load(path).get(LayerShape(1, 2, 3)) == pytest.approx(1e-4)
    (tmp_path / "bad.json").write_text(json.dumps({"profile": "x"}))
    with pytest.raises(ConfigError, match="not a latency table"):
        LatencyTable.load(tmp_path / "bad.json")
    doc = json.loads(table.to_json())
    doc["entries"] = {"k": -1}
    (tmp_path / "neg.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="non-negative"):
        LatencyTable.load(tmp_path / "neg.json")
    with pytest.raises(ConfigError, match="not found"):
        LatencyTable.load(tmp_path / "missing.json")


def test_whole_model_fit_maps_through_anchors_and_inverts():
    # table says 10/6/3 ms where the whole model measured 10/5/2 ms: the table over-predicts pruned models
    fit = WholeModelFit.from_points([(0.010, 0.010), (0.006, 0.005), (0.003, 0.002)])
    assert fit(0.010) == pytest.approx(0.010)
    assert fit(0.0045) == pytest.approx(0.0035)  # halfway between the 3 and 6 ms anchors
    assert fit(0.0015) == pytest.approx(0.001)  # below the smallest anchor: proportional
    assert fit(0.020) == pytest.approx(0.020)  # above dense: proportional
    for raw in (0.001, 0.0035, 0.007, 0.012):
        assert fit.inverse(fit(raw)) == pytest.approx(raw)


def test_whole_model_fit_is_monotone_under_noise():
    # a noisy anchor timed slower than a wider one must not make narrower models look slower
    fit = WholeModelFit.from_points([(0.010, 0.010), (0.006, 0.011), (0.003, 0.004)])
    assert list(fit.measured_s) == sorted(fit.measured_s)
    assert fit(0.008) <= fit(0.010)
    assert fit.inverse(0.0105) <= 0.010


def test_whole_model_fit_needs_a_measurement():
    with pytest.raises(ConfigError, match="no anchor measurement"):
        WholeModelFit.from_points([])


def test_cpu_profile_without_peak_gets_a_relative_mac_model():
    from edgeprune.measurement.latency import roofline_for
    from edgeprune.targets.target import target
    from edgeprune.targets.profiles import load_profile

    roof = roofline_for(target("rpi5", runtime="onnxruntime"), "fp32")  # no sourced clock -> no peak figure
    assert roof.relative
    small, big = LayerShape(128, 384, 384), LayerShape(128, 384, 1536)
    assert roof.layer_s(big) / roof.layer_s(small) == pytest.approx(4.0)  # cost follows MACs
