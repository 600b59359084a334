"""Builds the damaged inputs of tests/test_bad_inputs.py into one folder (once per module).

Every file is small and made here from scratch: no network, no shipped model.
"""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
MODELS = '''
import sys, torch
sys.path.insert(0, {here!r})
from conftest import make_cnn, make_mlp


def mlp():
    return make_mlp()


def cnn():
    return make_cnn()


def cnn_only():
    return make_cnn()[0]


def not_a_model():
    return 42


def broken():
    raise RuntimeError("factory exploded")


def nan_weight():
    model, inputs = make_mlp()
    with torch.no_grad():
        model.net[0].weight[3, 5] = float("nan")
    return model, inputs


def inf_weight():
    model, inputs = make_mlp()
    with torch.no_grad():
        model.net[2].bias[1] = float("inf")
    return model, inputs


def nan_inputs():
    model, (x,) = make_mlp()
    x = x.clone()
    x[0, 0] = float("nan")
    return model, (x,)


def bad_output():
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x + torch.rand_like(x)

    return Noisy(), (torch.randn(2, 4),)
'''


def build_inputs(root: Path) -> Path:
    (root / "models.py").write_text(MODELS.format(here=str(HERE)))
    _data_files(root)
    _onnx_files(root)
    _profiles(root)
    _plans(root)
    _outdirs_and_bundles(root)
    _sweeps(root)
    return root


def _sweeps(root: Path) -> None:
    """SWEEP.yaml files, each with one problem (the minimal file of edgeprune.sweeper.spec, changed once)."""
    good = ("models:\n  - {name: mlp, model: \"models.py:mlp\"}\ntargets:\n  - {name: here, profile: host}\n"
            "budgets: {speedup: [1.5]}\n")
    (root / "sweep_budget.yaml").write_text(good.replace("[1.5]", "[0.9]"))
    (root / "sweep_nan.yaml").write_text(good.replace("[1.5]", "[.nan]"))
    (root / "sweep_list.yaml").write_text("- models\n")
    (root / "sweep_field.yaml").write_text(good + "precision: [fp32]\n")


def _data_files(root: Path) -> None:
    g = np.random.default_rng(0)
    good = g.standard_normal((16, 32)).astype(np.float32)
    np.save(root / "good.npy", good)
    bad = good.copy()
    bad[7, 3] = np.nan
    np.save(root / "nan.npy", bad)
    bad[7, 3] = np.inf
    np.save(root / "inf.npy", bad)
    np.save(root / "wrong_width.npy", good[:, :7])
    np.save(root / "pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    t = torch.from_numpy(good.copy())
    t[2, 2] = float("nan")
    torch.save((t,), root / "nan.pt")
    (root / "data.xyz").write_text("1 2 3\n")
    (root / "empty_dir").mkdir()
    (root / "hf_empty").mkdir()
    (root / "hf_badconfig").mkdir()
    (root / "hf_badconfig" / "config.json").write_text("{not json")
    (root / "corrupt.pt2").write_bytes(b"PK\x03\x04 not really a zip archive")
    _newer_pt2(root / "newer.pt2")


def _newer_pt2(path: Path) -> None:
    """A real ExportedProgram whose archive says a future torch (export schema 99) saved it."""
    import zipfile

    program = torch.export.export(torch.nn.Linear(32, 8).eval(), (torch.randn(1, 32),))
    real = path.with_name("real.pt2")
    torch.export.save(program, str(real))
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith(".json") and "/models/" in f"/{name}":
                doc = json.loads(data)
                doc["schema_version"], doc["torch_version"] = {"major": 99, "minor": 0}, "9.9.0"
                data = json.dumps(doc).encode()
            dst.writestr(name, data)
    real.unlink()


def _mlp_onnx(path: Path) -> None:
    from conftest import make_mlp

    model, inputs = make_mlp()
    torch.onnx.export(model, inputs, str(path), dynamo=False, input_names=["x"])


def _onnx_files(root: Path) -> None:
    import onnx

    _mlp_onnx(root / "good.onnx")
    data = (root / "good.onnx").read_bytes()
    (root / "trunc.onnx").write_bytes(data[: len(data) // 2])
    (root / "text.onnx").write_text("this is not a model\n")
    proto = onnx.load(str(root / "good.onnx"))
    proto.opset_import[0].version = 99
    onnx.save(proto, str(root / "opset99.onnx"))
    ext = root / "ext"
    ext.mkdir()
    for name in ("missing", "escape"):
        onnx.save(onnx.load(str(root / "good.onnx")), str(ext / f"{name}.onnx"), save_as_external_data=True,
                  all_tensors_to_one_file=True, location=f"{name}.data", size_threshold=0)
    (ext / "missing.data").unlink()
    proto = onnx.load(str(ext / "escape.onnx"), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../outside.data"
    onnx.save(proto, str(ext / "escape.onnx"))
    (root / "lonely.xml").write_text("<net/>")


def _profiles(root: Path) -> None:
    from importlib.resources import files

    text = files("edgeprune.hw_profiles").joinpath("epyc-zen3.yaml").read_text()
    (root / "nan_profile.yaml").write_text(text.replace("value: 204.8", "value: .nan", 1))
    (root / "broken.yaml").write_text("name: x\n  bad: [indent\n")


def _plans(root: Path) -> None:
    from edgeprune.optimizer.planner import PLAN_VERSION

    (root / "plan_v99.json").write_text('{"version": 99}')
    (root / "plan_notjson.json").write_text("{oops")
    base = {"model": "m", "profile": "host", "runtime": "onnxruntime", "budget_s": 1e-3, "fixed_s": 0.0,
            "predicted_s": 1e-3, "dense_predicted_s": 2e-3, "version": PLAN_VERSION}
    other = dict(base, groups=[{"name": "encoder.layer.0.ffn", "unit": "ffn", "width": 1536, "keep": 768}])
    (root / "plan_other.json").write_text(json.dumps(other))
    wider = dict(base, groups=[{"name": "net.0", "unit": "channels", "width": 640, "keep": 320}])
    (root / "plan_wider.json").write_text(json.dumps(wider))


def _outdirs_and_bundles(root: Path) -> None:
    from edgeprune.deploy.bundle import build_bundle

    out = root / "outdir"
    out.mkdir()
    _mlp_onnx(out / "m.onnx")
    (root / "outdir_broken").mkdir()
    (root / "outdir_broken" / "m.onnx").write_bytes(b"not onnx")
    shutil.copytree(out, root / "outdir_badmeta")
    (root / "outdir_badmeta" / "plan.json").write_text("{oops")
    (root / "report_bad").mkdir()
    (root / "report_bad" / "report.json").write_text("{oops")
    good = root / "work" / "b.tar.gz"
    good.parent.mkdir()
    build_bundle(out, good)
    _retar(good, root / "b_extra.tar.gz", add={"extra.txt": b"surprise"})
    _retar(good, root / "b_missing.tar.gz", drop="m.onnx")
    _retar(good, root / "b_tampered.tar.gz", flip="m.onnx")
    _retar(good, root / "b_probe.tar.gz", probe_off=True)
    _evil(root / "b_dotdot.tar.gz", "b/../../evil.txt", None)
    _evil(root / "b_symlink.tar.gz", "b/link", "/etc/passwd")
    shutil.rmtree(root / "work")


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


def _retar(src: Path, dst: Path, add=None, drop=None, flip=None, probe_off=False) -> None:
    import hashlib

    files = _members(src)
    top = next(iter(files)).split("/")[0]
    if drop:
        del files[f"{top}/{drop}"]
    if flip:
        data = bytearray(files[f"{top}/{flip}"])
        data[-1] ^= 0xFF
        files[f"{top}/{flip}"] = bytes(data)
    if probe_off:  # the reference output is changed and its checksum updated: only the self-check can tell
        manifest = json.loads(files[f"{top}/manifest.json"])
        rel = manifest["probe"]["outputs"][0]["file"]
        arr = np.load(io.BytesIO(files[f"{top}/{rel}"])) + 1.0
        buf = io.BytesIO()
        np.save(buf, arr)
        files[f"{top}/{rel}"] = buf.getvalue()
        manifest["files"][rel] = hashlib.sha256(buf.getvalue()).hexdigest()
        files[f"{top}/manifest.json"] = json.dumps(manifest).encode()
    for rel, data in (add or {}).items():
        files[f"{top}/{rel}"] = data
    with tarfile.open(dst, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _evil(path: Path, name: str, link: str | None) -> None:
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo("b/manifest.json")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"{}"))
        info = tarfile.TarInfo(name)
        if link:
            info.type, info.linkname = tarfile.SYMTYPE, link
            tf.addfile(info)
        else:
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
