"""Deployment bundles: one .tar.gz holding the runtime artifacts, a manifest and the standalone runner.

Layout inside the archive (one top folder, named after the archive):

    NAME/manifest.json        schema "edgeprune.deploy.bundle/1": model, profile, precision, inputs/outputs
                              (name, shape, dtype), artifacts, library versions, plan/report summaries,
                              sha256 of every other file, probe {inputs, outputs, atol}
    NAME/model.onnx ...       ONNX (+ external .data), OpenVINO .xml/.bin, TensorRT .engine/.plan
    NAME/probe/input_0.npy    fixed probe inputs and the host's reference outputs (np.save, no pickle)
    NAME/edgeprune_run.py     the runner: numpy + one runtime, no torch, no edgeprune

The runner's own code (checksums, safe extraction, statistics) is loaded from its file here, so the
host and the device check and time bundles with one implementation.
"""
from __future__ import annotations

import datetime
import importlib.util
import io
import json
import os
import re
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune._io import atomic_path
from edgeprune.errors import ConfigError, ModelLoadError

MANIFEST_SCHEMA = "edgeprune.deploy.bundle/1"
RUNNER_NAME = "edgeprune_run.py"
_SEQ_DIM = re.compile(r"seq|len|token|time|step", re.I)  # dynamic dims that mean "sequence": probe with 128
_META_KEYS = ("model", "profile", "precision", "plan", "inputs", "atol")  # taken from an OUTDIR/manifest.json


def load_runner():
    """The runner template as a module (loaded by path: it is not part of edgeprune's import graph)."""
    from edgeprune.deploy.runner import RUNNER_PATH

    mod = sys.modules.get("edgeprune_bundle_runner")
    if mod is None:
        spec = importlib.util.spec_from_file_location("edgeprune_bundle_runner", RUNNER_PATH)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclass-free, but keep one instance for isinstance checks
        spec.loader.exec_module(mod)
    return mod


def _runner_error(err: Exception) -> ConfigError:
    return ConfigError(str(err))


# -- collecting OUTDIR ----------------------------------------------------------------------------
def find_artifacts(outdir: Path) -> list[dict[str, Any]]:
    """Runtime artifacts under OUTDIR (hidden folders skipped), each with the files it needs.

    The formats are the runner's (FORMAT_SUFFIXES): a bundle carries what the device-side runner can run."""
    runner = load_runner()
    arts = []
    for path in sorted(outdir.rglob("*")):
        rel = path.relative_to(outdir)
        if not path.is_file() or any(p.startswith(".") for p in rel.parts) or path.suffix not in runner.FORMAT_SUFFIXES:
            continue
        extra = [path.with_suffix(c) for c in runner.COMPANIONS.get(path.suffix, ())]
        if not all(e.is_file() for e in extra):
            continue  # an .xml without weights beside it is not an OpenVINO IR (could be anything)
        if path.suffix == ".onnx":
            extra += sorted(path.parent.glob(path.name + ".data")) + sorted(path.parent.glob(path.stem + ".data"))
        arts.append({"file": rel.as_posix(), "format": runner.FORMAT_SUFFIXES[path.suffix], "bytes": path.stat().st_size,
                     "extra_files": sorted({e.relative_to(outdir).as_posix() for e in extra})})
    return arts


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {path}: {err}", hint="fix or remove the file") from None


def _summarise_plan(plan: Any) -> Any:
    """Keep a plan's small scalar fields; the layer list is summarised by its length."""
    if not isinstance(plan, dict):
        return None
    out = {k: v for k, v in plan.items() if isinstance(v, (str, int, float, bool)) or v is None}
    for k, v in plan.items():
        if isinstance(v, list):
            out[f"{k}_count"] = len(v)
    return out


def _summarise_report(report: Any) -> Any:
    if not isinstance(report, dict):
        return None
    keep = {k: report[k] for k in ("model", "profile", "precision", "accuracy") if k in report}
    results = report.get("results") or []
    keep["results"] = [{"name": r.get("name"), "backend": r.get("backend"), "p50_ms": (r.get("stats") or {}).get("p50")}
                       for r in results if isinstance(r, dict)]
    keep["speedups"] = report.get("speedups") or []
    return keep


def _concrete(shape, lead: int) -> list[int]:
    dims = []
    for i, d in enumerate(shape):
        if isinstance(d, int) and d > 0:
            dims.append(d)
        else:
            dims.append(lead if i == 0 else (128 if isinstance(d, str) and _SEQ_DIM.search(d) else 1))
    return dims


def runtime_for(artifact: Path) -> str | None:
    """The runtime that computes the host's reference outputs for an artifact: the runner's first choice for its
    format that the runner also has a session for here, or None (a TensorRT engine)."""
    runner = load_runner()
    fmt = runner.FORMAT_SUFFIXES.get(artifact.suffix)
    return next((rt for rt in runner.FORMAT_RUNTIMES.get(fmt, ()) if rt in runner.SESSIONS), None)


def _io_specs(artifact: Path) -> tuple[list[dict], list[dict]]:
    """Input and output (name, shape, dtype) read from the runtime, so they match what the device sees."""
    from edgeprune.backends import get_backend

    runtime = runtime_for(artifact)
    try:
        backend = get_backend(runtime).compile(artifact)
    except ModelLoadError as err:  # the runtime's one line; the hint fits a bundle, not a re-export
        raise ModelLoadError(err.message, hint=f"pass a valid {artifact.suffix} artifact") from None
    conv = lambda specs: [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in specs]
    return conv(backend.input_specs()), conv(backend.output_specs() or [])


def probe_inputs(inputs: list[dict], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic probe: batch 1 (or the static batch), sequence dims 128, others 1; values as edgeprune bench."""
    from edgeprune.backends.base import TensorSpec
    from edgeprune.measurement.bench import random_inputs

    lead = next((s["shape"][0] for s in inputs if s["shape"] and isinstance(s["shape"][0], int) and s["shape"][0] > 0), 1)
    specs = [TensorSpec(s["name"], tuple(_concrete(s["shape"], lead)), s["dtype"]) for s in inputs]
    return random_inputs(specs, batch=lead, seed=seed)


def reference_outputs(artifact: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    runner = load_runner()
    cls = runner.SESSIONS[runtime_for(artifact)]
    try:
        return [np.asarray(o) for o in cls(artifact, None, "fp32").run(feeds)]
    except runner.RunnerError as err:
        raise _runner_error(err) from None
    except Exception as err:  # runtime failure on the probe: the artifact cannot run as described
        raise ModelLoadError(f"{artifact.name} fails on the probe input: {str(err).splitlines()[0]}",
                             hint="check the input specs in OUTDIR/manifest.json") from None


# -- building --------------------------------------------------------------------------------------
def default_atol(precision: str) -> float:
    """The probe's tolerance on the device: FP32 kernels agree to 1e-4; INT8/FP16 ones round differently per ISA
    (VNNI or not, fp16 accumulation), so a reduced-precision artifact is checked to 5e-2."""
    return 1e-4 if precision == "fp32" else 5e-2


def build_manifest(outdir: Path, name: str | None = None, seed: int = 0, atol: float | None = None):
    """(manifest without files/checksums, {archive path: bytes or source Path}) for OUTDIR."""
    from edgeprune.env import library_versions

    outdir = Path(outdir)
    if not outdir.is_dir():
        raise ConfigError(f"not a folder: {outdir}", hint="pass the folder that holds model.onnx (or .xml/.engine)")
    arts = find_artifacts(outdir)
    if not arts:
        raise ConfigError(f"no runtime artifact (.onnx, .xml+.bin, .engine, .plan) in {outdir}",
                          hint="export one first: edgeprune export MODEL -o OUTDIR/model.onnx")
    meta = _read_json(outdir / "manifest.json") if (outdir / "manifest.json").is_file() else {}
    if not isinstance(meta, dict):
        raise ConfigError(f"{outdir / 'manifest.json'} is not a JSON object", hint="fix or remove it")
    meta = {k: meta[k] for k in _META_KEYS if k in meta}
    report = _read_json(outdir / "report.json") if (outdir / "report.json").is_file() else None
    shipped = report.get("artifact") if isinstance(report, dict) else None
    precision = meta.get("precision") or (report.get("precision") if isinstance(report, dict) else None) or "fp32"
    # optimize's chosen reduced-precision artifact first: the probe is computed on it and the runner runs it
    arts.sort(key=lambda a: a["file"] != shipped)
    runnable = [a for a in arts if runtime_for(outdir / a["file"]) is not None]
    source = outdir / (runnable[0]["file"] if runnable else arts[0]["file"])
    if runnable:
        inputs, outputs = _io_specs(source)
        inputs = meta.get("inputs") or inputs
    elif meta.get("inputs"):
        inputs, outputs = meta["inputs"], []
    else:
        raise ConfigError(f"{outdir} holds only TensorRT engines and no manifest.json with 'inputs'",
                          hint="add the ONNX file the engine was built from")
    files: dict[str, Any] = {}
    for a in arts:
        for rel in [a["file"], *a["extra_files"]]:
            files[rel] = outdir / rel
    probe: dict[str, Any] = {"inputs": [], "outputs": [], "seed": seed, "computed_with": None,
                             "atol": float(atol if atol is not None else meta.get("atol", default_atol(precision)))}
    if runnable:
        feeds = probe_inputs(inputs, seed)
        refs = reference_outputs(source, feeds)
        probe["computed_with"] = {"runtime": runtime_for(source), "artifact": source.name}
        for kind, arrays, names in (("input", list(feeds.values()), list(feeds)), ("output", refs, [o["name"] for o in outputs])):
            for i, (arr, n) in enumerate(zip(arrays, names)):
                buf = io.BytesIO()
                np.save(buf, arr, allow_pickle=False)
                rel = f"probe/{kind}_{i}.npy"
                files[rel] = buf.getvalue()
                probe[f"{kind}s"].append({"name": n, "file": rel, "shape": list(arr.shape), "dtype": arr.dtype.name})
    plan = _read_json(outdir / "plan.json") if (outdir / "plan.json").is_file() else meta.get("plan")
    manifest = {
        "schema": MANIFEST_SCHEMA, "model": meta.get("model") or name or source.stem,
        "profile": meta.get("profile"), "precision": precision, "shipped": shipped,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs, "outputs": outputs, "artifacts": arts, "versions": library_versions(),
        "plan": _summarise_plan(plan), "report": _summarise_report(report), "probe": probe, "runner": RUNNER_NAME,
    }
    from edgeprune.deploy.runner import RUNNER_PATH

    files[RUNNER_NAME] = RUNNER_PATH
    return manifest, files


def _add(tf: tarfile.TarFile, arcname: str, data: bytes | Path, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(arcname)
    info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = mode, 0, 0, 0, "", ""  # reproducible
    if isinstance(data, Path):
        info.size = data.stat().st_size
        with open(data, "rb") as f:
            tf.addfile(info, f)
    else:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))


def build_bundle(outdir: str | os.PathLike, output: str | os.PathLike, *, name: str | None = None, seed: int = 0,
                 atol: float | None = None) -> dict:
    """Write OUTPUT (.tar.gz) from OUTDIR; returns the manifest written into it."""
    output = Path(output)
    if not output.name.endswith((".tar.gz", ".tgz")):
        raise ConfigError(f"bundle name {output.name} must end in .tar.gz", hint="e.g. -o model-bundle.tar.gz")
    manifest, files = build_manifest(Path(outdir), name=name, seed=seed, atol=atol)
    runner = load_runner()
    manifest["files"] = {rel: (runner.sha256_file(src) if isinstance(src, Path) else _sha(src)) for rel, src in sorted(files.items())}
    top = output.name[: -len(".tar.gz")] if output.name.endswith(".tar.gz") else output.stem
    with atomic_path(output, suffix=".tar.gz") as tmp:
        with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tf:
            _add(tf, f"{top}/manifest.json", json.dumps(manifest, indent=2).encode())
            for rel, src in sorted(files.items()):
                _add(tf, f"{top}/{rel}", src, 0o755 if rel == RUNNER_NAME else 0o644)
    return manifest


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# -- unpacking and verifying -----------------------------------------------------------------------
def unpack_bundle(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract ARCHIVE into DEST (refusing '..', absolute paths and links); returns the bundle root."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise ConfigError(f"bundle not found: {archive}", hint="pass the .tar.gz written by `edgeprune bundle`")
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(f"{dest} is not empty", hint="unpack into a new folder")
    import shutil

    runner = load_runner()
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    # Extract into a hidden folder first: a refused archive leaves nothing behind.
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest))
    try:
        root = runner.safe_extract(archive, tmp)
        runner.verify_files(root, runner.load_manifest(root))
        for p in root.iterdir():
            os.replace(p, dest / p.name)
    except runner.RunnerError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise _runner_error(err) from None
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def verify_bundle(root: str | os.PathLike) -> dict:
    """Check every checksum of an unpacked bundle; returns its manifest."""
    runner = load_runner()
    try:
        root = runner.bundle_root(Path(root))
        manifest = runner.load_manifest(root)
        runner.verify_files(root, manifest)
    except runner.RunnerError as err:
        raise _runner_error(err) from None
    return manifest


def run_bundle_in_process(root: str | os.PathLike, **kwargs) -> dict:
    """Run the runner's code in this process (no subprocess); kwargs as the runner's run_bundle."""
    runner = load_runner()
    try:
        return runner.run_bundle(Path(root), **kwargs)
    except runner.RunnerError as err:
        raise _runner_error(err) from None
