"""Deployment bundles: build, unpack elsewhere, run the standalone runner where torch and edgeprune cannot
be imported; checksums, unsafe archives and missing runtimes are refused with one line."""
from __future__ import annotations

import ast
import dataclasses
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgeprune.deploy import bundle as B
from edgeprune.measurement.bench import LatencyStats
from edgeprune.cli import main
from edgeprune.errors import ConfigError
from edgeprune.deploy.runner import RUNNER_PATH

# Runs a script as on a device without torch or edgeprune: -I drops PYTHONPATH, cwd and user site; a
# None entry in sys.modules makes `import X` raise ImportError. Prints what got imported from them.
SHIM = """import runpy, sys
BLOCK = {block!r}
for name in BLOCK:
    sys.modules[name] = None
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code
leaked = sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in BLOCK)
print("LEAKED", leaked)
sys.exit(code)
"""
NO_TORCH = ("torch", "edgeprune", "torchvision", "transformers")


def write_shim(folder: Path, block=NO_TORCH, name: str = "py-notorch") -> Path:
    """An executable that behaves like `python` on a device without the blocked packages."""
    shim = folder / f"{name}.py"
    shim.write_text(SHIM.format(block=tuple(block)))
    exe = folder / name
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -I {shim} \"$@\"\n")
    exe.chmod(0o755)
    return exe


def mlp_onnx(path: Path, d_in: int = 32, hidden: int = 64, d_out: int = 10, seed: int = 0) -> Path:
    """A small MLP built directly with onnx.helper (no torch export: keeps the tests fast)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n)
             for n, s in (("w1", (d_in, hidden)), ("b1", (hidden,)), ("w2", (hidden, d_out)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"), helper.make_node("MatMul", ["r", "w2"], ["logits"], name="fc2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", d_in])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", d_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def token_onnx(path: Path) -> Path:
    """input_ids / attention_mask / token_type_ids [batch, sequence] -> embeddings * mask (+ type embedding)."""
    emb = numpy_helper.from_array(np.random.default_rng(1).standard_normal((2000, 8)).astype(np.float32), "emb")
    temb = numpy_helper.from_array(np.ones((2, 8), np.float32), "temb")
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["e"]), helper.make_node("Gather", ["temb", "token_type_ids"], ["t"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "ax"], ["m3"]), helper.make_node("Add", ["e", "t"], ["et"]),
             helper.make_node("Mul", ["et", "m3"], ["hidden"])]
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    graph = helper.make_graph(nodes, "tok", ins, [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "sequence", 8])],
                              [emb, temb, numpy_helper.from_array(np.array([-1], np.int64), "ax")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def outdir(tmp_path):
    d = tmp_path / "out"
    mlp_onnx(d / "model.onnx")
    return d


@pytest.fixture
def built(outdir, tmp_path):
    archive = tmp_path / "dist" / "mlp.tar.gz"
    manifest = B.build_bundle(outdir, archive)
    return archive, manifest


def _run(exe, *args, cwd=None):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_runner_imports_only_stdlib_numpy_and_runtimes():
    tree = ast.parse(RUNNER_PATH.read_text())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    named = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "need"
             and n.args and isinstance(n.args[0], ast.Constant)}
    third_party = (mods | named) - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"numpy", "onnxruntime", "openvino"}, third_party


def test_round_trip_runner_passes_without_torch(built, tmp_path):
    archive, manifest = built
    assert manifest["inputs"] == [{"name": "x", "shape": ["batch", 32], "dtype": "float32"}]
    assert set(manifest["files"]) == {"model.onnx", "edgeprune_run.py", "probe/input_0.npy", "probe/output_0.npy"}
    with tarfile.open(archive) as tf:
        assert all(n.startswith("mlp/") for n in tf.getnames()) and "mlp/manifest.json" in tf.getnames()
    root = B.unpack_bundle(archive, tmp_path / "elsewhere")
    assert np.load(root / "probe/input_0.npy", allow_pickle=False).shape == (1, 32)
    py = write_shim(tmp_path)
    proc = _run(py, root / "edgeprune_run.py", "--iters", "20", "--rounds", "4", "--warmup", "2", "--layers",
                "--out", tmp_path / "res.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "LEAKED []" in proc.stdout and "check: ok" in proc.stdout
    doc = json.loads((tmp_path / "res.json").read_text())
    assert doc["schema"] == "edgeprune.device-results/1" and doc["check"]["ok"] and doc["files_checked"] == 4
    r = doc["results"][0]
    assert r["stats"]["n"] == 20 and len(r["round_p50_ms"]) == 4 and r["throughput"] > 0
    assert r["stats"]["min"] <= r["stats"]["p50"] <= r["stats"]["p99"] <= r["stats"]["max"]
    assert {l["op_type"] for l in doc["layers"]} >= {"MatMul"} and all(l["time_ms"] >= 0 for l in doc["layers"])
    # The runner also takes the archive itself and extracts it safely.
    proc = _run(py, root / "edgeprune_run.py", archive, "--check-only", "--out", tmp_path / "res2.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "res2.json").read_text())["results"] == []


def test_runner_statistics_match_edgeprune_bench():
    runner = B.load_runner()
    samples = list(np.random.default_rng(3).gamma(2.0, 0.5, size=101))
    assert runner.latency_stats(samples) == dataclasses.asdict(LatencyStats.from_samples(samples))
    calls = []
    got, p50s = runner.measure(lambda: calls.append(1), warmup=3, iters=20, rounds=4)
    assert len(calls) == 23 and len(got) == 20 and len(p50s) == 4


def test_tampered_file_is_refused(built, tmp_path):
    archive, _ = built
    root = B.unpack_bundle(archive, tmp_path / "u")
    data = bytearray((root / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (root / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="checksum mismatch for model.onnx"):
        B.verify_bundle(root)
    proc = _run(sys.executable, root / "edgeprune_run.py", "--out", tmp_path / "r.json")
    assert proc.returncode == 2 and proc.stderr.startswith("error: checksum mismatch for model.onnx")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.json").exists()
    # Repacked with the changed file and the old manifest: refused at unpack, nothing left behind.
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tf:
        tf.add(root, arcname="mlp")
    with pytest.raises(ConfigError, match="checksum mismatch"):
        B.unpack_bundle(bad, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def _evil_archive(path: Path, kind: str) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo("b/manifest.json")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"{}"))
        info = tarfile.TarInfo({"dotdot": "b/../../evil.txt", "absolute": "/tmp/evil.txt", "plain_dotdot": "../evil.txt"}.get(kind, "b/link"))
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "b/manifest.json"
        elif kind == "fifo":
            info.type = tarfile.FIFOTYPE
        else:
            info.size = 4
        tf.addfile(info, io.BytesIO(b"evil") if info.isfile() else None)
    return path


@pytest.mark.parametrize("kind, fragment", [("dotdot", "unsafe path"), ("absolute", "unsafe path"), ("plain_dotdot", "unsafe path"),
                                            ("symlink", "is a link"), ("hardlink", "is a link"), ("fifo", "special file")])
def test_unsafe_archive_members_are_refused(tmp_path, kind, fragment):
    archive = _evil_archive(tmp_path / "evil.tar.gz", kind)
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(ConfigError, match=fragment):
        B.unpack_bundle(archive, dest)
    assert not dest.exists() and not (tmp_path / "evil.txt").exists()
    result = CliRunner().invoke(main, ["bench-bundle", str(archive)])
    assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("block, args, fragment", [
    (("onnxruntime", "openvino"), [], "pip install onnxruntime"),
    (("onnxruntime",), ["--backend", "onnxruntime"], "the onnxruntime package is not installed"),
    (("numpy",), [], "pip install numpy"),
])
def test_runner_without_the_runtime_says_what_to_install(built, tmp_path, block, args, fragment):
    archive, _ = built
    root = B.unpack_bundle(archive, tmp_path / "u")
    py = write_shim(tmp_path, block=NO_TORCH + block)
    proc = _run(py, root / "edgeprune_run.py", *args, "--out", tmp_path / "r.json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_openvino_ir_and_metadata_from_outdir(outdir, tmp_path):
    import openvino as ov

    ov.save_model(ov.convert_model(str(outdir / "model.onnx")), str(outdir / "ir" / "model.xml"))
    (outdir / "manifest.json").write_text(json.dumps({"model": "mlp-pruned", "profile": "rpi5", "precision": "fp32"}))
    (outdir / "plan.json").write_text(json.dumps({"target_ms": 1.5, "layers": [{"name": "fc1", "keep": 48}]}))
    (outdir / "report.json").write_text(json.dumps({"results": [{"name": "dense", "backend": "onnxruntime", "stats": {"p50": 1.0}}]}))
    manifest = B.build_bundle(outdir, tmp_path / "ir.tar.gz")
    assert manifest["model"] == "mlp-pruned" and manifest["profile"] == "rpi5"
    assert manifest["plan"] == {"target_ms": 1.5, "layers_count": 1}
    assert manifest["report"]["results"] == [{"name": "dense", "backend": "onnxruntime", "p50_ms": 1.0}]
    assert {a["format"] for a in manifest["artifacts"]} == {"onnx", "openvino"}
    assert {"ir/model.xml", "ir/model.bin"} <= set(manifest["files"])
    root = B.unpack_bundle(tmp_path / "ir.tar.gz", tmp_path / "u")
    doc = B.run_bundle_in_process(root, backend="openvino", warmup=1, iters=4, rounds=2, layers=True)
    assert doc["artifact"] == "ir/model.xml" and doc["check"]["ok"] and doc["layers"]


def test_probe_inputs_follow_bench_conventions(tmp_path):
    (tmp_path / "tok").mkdir()
    token_onnx(tmp_path / "tok" / "m.onnx")
    manifest = B.build_bundle(tmp_path / "tok", tmp_path / "tok.tar.gz")
    root = B.unpack_bundle(tmp_path / "tok.tar.gz", tmp_path / "u")
    probe = {e["name"]: np.load(root / e["file"], allow_pickle=False) for e in manifest["probe"]["inputs"]}
    assert all(a.shape == (1, 128) and a.dtype == np.int64 for a in probe.values())
    assert probe["input_ids"].min() >= 1000 and probe["input_ids"].max() < 2000
    assert (probe["attention_mask"] == 1).all() and (probe["token_type_ids"] == 0).all()
    assert manifest["probe"]["outputs"][0]["shape"] == [1, 128, 8]


def test_cli_bundle_and_bench_bundle(outdir, tmp_path):
    runner = CliRunner()
    archive = tmp_path / "m.tar.gz"
    result = runner.invoke(main, ["bundle", str(outdir), "-o", str(archive)])
    assert result.exit_code == 0, result.output
    js = outdir / "results-host.json"
    result = runner.invoke(main, ["bench-bundle", str(archive), "--warmup", "2", "--iters", "10", "--rounds", "2", "--batch", "4",
                                  "--json", str(js)])
    assert result.exit_code == 0, result.output
    assert "self-check on this host: ok" in result.output and "latency (ms)" in result.output
    r = json.loads(js.read_text())["results"][0]
    assert r["stats"]["n"] == 10 and r["batch"] == 4
    result = runner.invoke(main, ["bench-bundle", str(archive), "--iters", "2", "--rounds", "5"])
    assert result.exit_code == 2 and "bad timing counts" in result.output
