"""The sweep's parts without a cluster: the file's validation, the configs and their keys, shipping files to a
timing node, the node lock, the store and the Pareto front. The Ray runs are in test_sweep_ray.py."""
from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeprune.errors import ConfigError
from edgeprune.sweeper.driver import Store, expand
from edgeprune.sweeper.report import pareto, render
from edgeprune.sweeper.spec import load_sweep
from edgeprune.sweeper.stages import NodeLock, land, pack, ship, unpack

from sweep_models import MINIMAL  # noqa: E402  (same folder)


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "m.py").write_text("def cnn():\n    return None\n")
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_minimal_file_expands_to_four_configs_with_stable_distinct_keys(tmp_path):
    spec, base = load_sweep(_write(tmp_path, MINIMAL))
    configs = expand(spec, base)
    assert [(c["target"]["name"], c["budget"]) for c in configs] == [
        ("host-ort", ["speedup", 1.3]), ("host-ort", ["speedup", 1.5]), ("host-ov", ["speedup", 1.3]), ("host-ov", ["speedup", 1.5])]
    assert configs[0]["model"]["model"] == f"{tmp_path.resolve()}/m.py:cnn"  # relative to the file's folder
    keys = [c["key"] for c in configs]
    assert len(set(keys)) == 4 and keys == [c["key"] for c in expand(*load_sweep(tmp_path / "sweep.yaml"))]
    assert spec.targets[0].resource_name == "target:host-ort"
    (tmp_path / "m.py").write_text("def cnn():\n    return 1\n")  # the model's file changed: every config is new
    assert not set(keys) & {c["key"] for c in expand(*load_sweep(tmp_path / "sweep.yaml"))}


@pytest.mark.parametrize("text, problems, fragments", [
    (MINIMAL.replace("1.3, 1.5", "0.8, 1.5").replace("precisions: [fp32]", "precisions: [fp32]\nmodles: []"), 2,
     ["field 'budgets.speedup': each speedup must be above 1 (got 0.8)", "field 'modles': unknown field"]),
    (MINIMAL.replace("name: host-ov", "name: host-ort"), 1, ["name 'host-ort' is used twice"]),
    (MINIMAL.replace("precisions: [fp32]", "precisions: [fp64]"), 1, ["field 'precisions.0'"]),
    (MINIMAL.replace("runtime: openvino}", "runtime: openvino, resource: 'target:x', ssh: 'a@b'}"), 1,
     ["field 'targets.1': give either resource (a Ray node) or ssh"]),
    ("models: [\n", 0, ["not valid YAML"]),
    ("- 1\n", 0, ["top level is a list"]),
])
def test_bad_file_says_each_problem_on_its_own_line(tmp_path, text, problems, fragments):
    with pytest.raises(ConfigError) as info:
        load_sweep(_write(tmp_path, text))
    lines = str(info.value).splitlines()
    for fragment in fragments:
        assert sum(fragment in line for line in lines) == 1, (fragment, lines)
    if problems > 1:
        assert lines[0].endswith(f"{problems} problem(s):") and len(lines) == problems + 1
    else:
        assert len(lines) == 1


def test_cli_refuses_a_bad_file_in_one_error_before_ray_and_writes_nothing(tmp_path):
    path = _write(tmp_path, MINIMAL.replace("1.3, 1.5", "0.5"))
    proc = subprocess.run([sys.executable, "-m", "edgeprune", "sweep", str(path), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "each speedup must be above 1 (got 0.5)" in proc.stderr and not (tmp_path / "out").exists()


def test_ship_and_land_carry_an_ir_with_its_weights_and_never_leave_the_folder(tmp_path):
    (tmp_path / "src").mkdir()
    xml, onnx = tmp_path / "src" / "m.xml", tmp_path / "src" / "m.onnx"
    xml.write_text("<net/>")
    (tmp_path / "src" / "m.bin").write_bytes(b"\x00\x01")
    onnx.write_bytes(b"onnx")
    shipped = ship({"paths": [("dense", onnx), ("ir", xml)], "n": 3, "missing": tmp_path / "nope.onnx"})
    assert "src" not in json.dumps(shipped, default=lambda b: "bytes")  # no path of this machine travels
    (tmp_path / "dest").mkdir()
    landed = land(shipped, tmp_path / "dest")
    (_, o), (_, x) = landed["paths"]
    assert o.read_bytes() == b"onnx" and x.read_text() == "<net/>" and x.with_suffix(".bin").read_bytes() == b"\x00\x01"
    assert o.parent != x.parent and all(tmp_path / "dest" in p.parents for p in (o, x)) and landed["n"] == 3
    evil = ("__edgeprune_file__", "../../x.onnx", {"../../x.onnx": b"x"})
    assert (tmp_path / "dest") in land(evil, tmp_path / "dest").parents


def _hold(path_id: str, exclusive: bool, seconds: float, queue) -> None:
    lock = NodeLock(path_id)
    with lock.held(exclusive):
        queue.put(("in", time.time()))
        time.sleep(seconds)
        queue.put(("out", time.time()))


def test_node_lock_keeps_an_exclusive_holder_apart_from_shared_ones():
    node = f"test-{time.time_ns()}"
    queue = mp.get_context("spawn").Queue()
    shared = [mp.get_context("spawn").Process(target=_hold, args=(node, False, 1.0, queue)) for _ in range(2)]
    for p in shared:
        p.start()
    time.sleep(0.5)  # both readers hold it now
    writer = mp.get_context("spawn").Process(target=_hold, args=(node, True, 0.2, queue))
    writer.start()
    for p in [*shared, writer]:
        p.join(30)
    events = [queue.get(timeout=5) for _ in range(6)]
    ins = sorted(t for kind, t in events if kind == "in")
    outs = sorted(t for kind, t in events if kind == "out")
    assert ins[1] < outs[0]  # the two shared holds overlapped
    assert ins[2] >= outs[1]  # the exclusive one began only after both had ended


def test_store_skips_done_and_ignores_a_damaged_record(tmp_path):
    store = Store(tmp_path)
    (tmp_path / "inside").mkdir()
    (tmp_path / "inside" / "report.json").write_text("{}")
    store.put({"key": "k1", "status": "ok", "model": "m"}, pack(tmp_path / "inside"))
    (tmp_path / "configs" / "k2.json").write_text('{"key": "k2", "sta')  # a torn write of another tool
    assert store.get("k1")["status"] == "ok" and store.get("k2") is None and store.get("k3") is None
    assert (tmp_path / "runs" / "k1" / "report.json").read_text() == "{}"
    rows = store.write_results([{"key": "k1"}, {"key": "k2"}])
    assert [r["key"] for r in rows] == ["k1"] and len((tmp_path / "results.jsonl").read_text().splitlines()) == 1


def test_unpack_refuses_a_member_outside_the_folder(tmp_path):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(tarfile.OutsideDestinationError):
        unpack(buf.getvalue(), tmp_path / "d")
    assert not (tmp_path / "escape.txt").exists()


def test_pareto_front_keeps_points_nothing_beats_on_both_axes():
    points = [(1.2, 90.0), (1.5, 80.0), (1.4, 70.0), (2.0, 50.0), (1.2, 85.0), (2.0, 50.0)]
    assert pareto(points) == [0, 1, 3, 5]  # (1.4, 70) loses to (1.5, 80); (1.2, 85) to (1.2, 90); equal points both stay


def test_report_plots_each_model_target_pair_and_lists_failures():
    def row(model, target, speed, score, status="ok"):
        return {"key": f"{model}{target}{speed}", "model": model, "target": target, "budget": {"speedup": speed},
                "precision": "fp32", "status": status, "speedup": {"median": speed, "min": speed - 0.1, "max": speed + 0.1},
                "score": score, "metric": "agreement", "chosen_precision": "FP32", "macs_kept": 0.5, "stages": [],
                "reason": None if status == "ok" else "ConfigError: bad"}
    rows = [row("a", "x", 1.3, 90), row("a", "x", 1.6, 80), row("a", "y", 1.3, 95), row("b", "x", 1.5, 0, "failed")]
    rows[1]["plan"] = {f"layer{i}": [32, 64] for i in range(6)}
    html = render(rows)
    assert html.count("data:image/png;base64,") == 2 and "ConfigError: bad" in html and "3 of 4 configs done" in html
    assert "layer0 32/64, layer1 32/64, layer2 32/64, layer3 32/64 (+2 more)" in html and html.count("dense widths") == 2
