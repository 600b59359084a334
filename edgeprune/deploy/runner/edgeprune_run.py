#!/usr/bin/env python3
"""edgeprune on-device runner: verify a bundle, self-check it against reference outputs, time it.

Copy the bundle to the device and run, with only numpy and one runtime (onnxruntime or openvino):

    python3 edgeprune_run.py [BUNDLE_DIR | BUNDLE.tar.gz] [--layers] [--out results.json]

Steps: check the sha256 of every file in manifest.json; run the stored probe input and compare with
the stored reference outputs (max abs diff, cosine, tolerance); time the model with the same loop and
statistics as `edgeprune bench` (warmup, then interleaved rounds; mean, std, min, p50, p90, p95, p99,
max, throughput); optionally time every node (--layers); write one results JSON.

Exit status: 0 ok, 1 the self-check failed (results still written), 2 cannot run (one line says why).
This file is standalone on purpose: it never imports torch or edgeprune (targets cannot install them).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path, PurePosixPath

RESULTS_SCHEMA = "edgeprune.device-results/1"
MANIFEST = "manifest.json"
# Which runtimes can run each artifact format, best first; pip package of each runtime.
FORMAT_RUNTIMES = {"onnx": ("onnxruntime", "openvino"), "openvino": ("openvino",), "tensorrt": ("tensorrt",)}
# The artifact formats a bundle carries, by file suffix, and the files each one needs beside it.
FORMAT_SUFFIXES = {".onnx": "onnx", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt"}
COMPANIONS = {".xml": (".bin",)}
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt", "numpy": "numpy"}


class RunnerError(Exception):
    """Cannot run: one line saying what is wrong and how to fix it (exit 2)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(f"{message} (fix: {hint})" if hint else message)


def need(module: str):
    """Import a runtime dependency, or say which package to install for this Python."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pkg = PACKAGES.get(module, module)
        raise RunnerError(f"the {pkg} package is not installed for {sys.executable}",
                          hint=f"{sys.executable} -m pip install {pkg}") from None


# -- archive and checksums --------------------------------------------------------------------
def _unsafe_name(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":")


def check_members(tf: tarfile.TarFile) -> list:
    """Refuse the whole archive before extracting anything if one member could escape the target
    (absolute path, '..', drive letter) or is not a plain file or folder (links, devices)."""
    members = tf.getmembers()
    for m in members:
        if _unsafe_name(m.name):
            raise RunnerError(f"unsafe path in bundle archive: {m.name!r}", hint="use an archive made by `edgeprune bundle`")
        if not (m.isfile() or m.isdir()):
            kind = "link" if (m.issym() or m.islnk()) else "special file"
            raise RunnerError(f"bundle archive member {m.name!r} is a {kind}; bundles hold only regular files",
                              hint="use an archive made by `edgeprune bundle`")
    return members


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract with explicit member checks (works on Python < 3.12, no reliance on `filter=`)."""
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as err:
        why = (str(err).splitlines() or [type(err).__name__])[0].rstrip(": ")  # tarfile lists every method it tried
        raise RunnerError(f"cannot read bundle archive {archive}: {why} (not a .tar.gz?)",
                          hint="pass a .tar.gz made by `edgeprune bundle`") from None
    dest = dest.resolve()
    with tf:
        for m in check_members(tf):
            target = (dest / m.name).resolve()
            if target != dest and dest not in target.parents:
                raise RunnerError(f"unsafe path in bundle archive: {m.name!r}", hint="use an archive made by `edgeprune bundle`")
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with tf.extractfile(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    return bundle_root(dest)


def bundle_root(folder: Path) -> Path:
    """The folder holding manifest.json: `folder` itself or its single top-level folder."""
    if (folder / MANIFEST).is_file():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    if len(subs) == 1 and (subs[0] / MANIFEST).is_file():
        return subs[0]
    raise RunnerError(f"no {MANIFEST} in {folder}", hint="pass the unpacked bundle folder or the .tar.gz")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(root: Path) -> dict:
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunnerError(f"cannot read {root / MANIFEST}: {err}", hint="rebuild the bundle") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or not manifest.get("artifacts"):
        raise RunnerError(f"{root / MANIFEST} is not an edgeprune bundle manifest", hint="rebuild the bundle")
    return manifest


def verify_files(root: Path, manifest: dict) -> int:
    """Check every listed file's sha256; returns how many were checked."""
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    extra = sorted(present - set(manifest["files"]) - {MANIFEST})
    if extra:
        raise RunnerError(f"bundle holds file(s) its manifest does not list: {extra[:3]}",
                          hint="remove them, or rebuild the bundle with `edgeprune bundle` to include them")
    for rel, digest in sorted(manifest["files"].items()):
        if _unsafe_name(rel):
            raise RunnerError(f"unsafe file name in manifest: {rel!r}", hint="rebuild the bundle")
        path = root / rel
        if not path.is_file():
            raise RunnerError(f"bundle file missing: {rel}", hint="copy the whole bundle again")
        if sha256_file(path) != digest:
            raise RunnerError(f"checksum mismatch for {rel}: the file was modified or damaged in transfer",
                              hint="copy the bundle again or rebuild it with `edgeprune bundle`")
    return len(manifest["files"])


# -- statistics (same definitions as edgeprune.measurement.bench.LatencyStats / measure_many) -------------
STAT_KEYS = ("n", "mean", "std", "min", "p50", "p90", "p95", "p99", "max")


def latency_stats(samples_ms) -> dict:
    np = need("numpy")
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise RunnerError("no timed iterations", hint="raise --iters or --seconds")
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return dict(zip(STAT_KEYS, (int(a.size), float(a.mean()), std, float(a.min()), float(p50), float(p90),
                                float(p95), float(p99), float(a.max()))))


def measure(fn, warmup: int = 20, iters: int | None = 200, seconds: float | None = None, rounds: int = 5):
    """(samples_ms, per-round p50s): warmup calls, then `rounds` rounds of iters//rounds calls (or seconds/rounds)."""
    np = need("numpy")
    if warmup < 0 or rounds < 1 or (seconds is None and (iters is None or iters < rounds)) or (seconds is not None and seconds <= 0):
        raise RunnerError(f"bad timing counts: warmup={warmup} iters={iters} seconds={seconds} rounds={rounds}",
                          hint="warmup >= 0, rounds >= 1, iters >= rounds, seconds > 0")
    for _ in range(warmup):
        fn()
    per_round = None if seconds is not None else max(1, iters // rounds)
    samples, p50s, clock = [], [], time.perf_counter_ns
    for _ in range(rounds):
        got: list = []
        deadline = None if seconds is None else clock() + int(seconds / rounds * 1e9)
        while True:
            t0 = clock()
            fn()
            t1 = clock()
            got.append((t1 - t0) / 1e6)
            if (per_round is not None and len(got) >= per_round) or (deadline is not None and t1 >= deadline):
                break
        samples.extend(got)
        p50s.append(float(np.median(got)))
    return samples, p50s


def compare_outputs(refs, outs, names, atol: float) -> list:
    """Per output: max abs diff, cosine, tolerance atol*max(1, max|ref|) (as edgeprune.exporter)."""
    np = need("numpy")
    if len(refs) != len(outs):
        return [{"name": "outputs", "shape": [], "max_abs_diff": float("inf"), "cosine": float("nan"), "tolerance": atol,
                 "ok": False, "note": f"runtime returned {len(outs)} outputs, reference has {len(refs)}"}]
    rows = []
    for name, ref, out in zip(names, refs, outs):
        ref, out = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
        if ref.shape != out.shape:
            rows.append({"name": name, "shape": list(out.shape), "max_abs_diff": float("inf"), "cosine": float("nan"),
                         "tolerance": atol, "ok": False})
            continue
        diff = float(np.max(np.abs(ref - out))) if ref.size else 0.0
        denom = float(np.linalg.norm(ref) * np.linalg.norm(out))
        cosine = float(np.dot(ref.ravel(), out.ravel()) / denom) if denom > 0 else 1.0
        tol = atol * (max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0)
        rows.append({"name": name, "shape": list(ref.shape), "max_abs_diff": diff, "cosine": cosine, "tolerance": tol,
                     "ok": bool(np.isfinite(diff) and diff <= tol)})
    return rows


# -- runtimes ----------------------------------------------------------------------------------
class OrtSession:
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None, precision: str):
        self.ort, self.path, self.threads = need("onnxruntime"), str(path), threads
        self.sess = self._open()
        self.outputs = [o.name for o in self.sess.get_outputs()]

    def _open(self, profile_prefix: str | None = None):
        so = self.ort.SessionOptions()
        so.log_severity_level = 3
        if self.threads:
            so.intra_op_num_threads, so.inter_op_num_threads = self.threads, 1
        if profile_prefix:
            so.enable_profiling, so.profile_file_prefix = True, profile_prefix
        return self.ort.InferenceSession(self.path, sess_options=so, providers=["CPUExecutionProvider"])

    def run(self, feeds):
        return self.sess.run(self.outputs, feeds)

    def runner(self, feeds):
        run, names = self.sess.run, self.outputs
        return lambda: run(names, feeds)

    def layers(self, feeds, runs: int) -> list:
        """Mean kernel time per node from ORT's profiler (events named <node>_kernel_time)."""
        with tempfile.TemporaryDirectory() as tmp:
            sess = self._open(os.path.join(tmp, "ort"))
            for _ in range(runs):
                sess.run(None, feeds)
            with open(sess.end_profiling(), encoding="utf-8") as f:
                events = json.load(f)
        rows: dict = {}
        for ev in events:
            if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
                continue
            args = ev.get("args", {})
            row = rows.setdefault(ev["name"][: -len("_kernel_time")], [args.get("op_name", ""), args.get("provider", ""), 0.0])
            row[2] += ev.get("dur", 0) / 1000.0 / runs  # µs -> ms, mean per run
        return [{"name": n, "op_type": t, "exec_type": e, "time_ms": ms} for n, (t, e, ms) in rows.items()]


class OvSession:
    name = "openvino"

    def __init__(self, path: Path, threads: int | None, precision: str):
        self.ov, self.path, self.threads, self.precision = need("openvino"), str(path), threads, precision
        self.compiled = self._compile()
        self.request = self.compiled.create_infer_request()

    def _compile(self, perf_count: bool = False):
        cfg: dict = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        # else OpenVINO silently runs bf16 on AMX CPUs and the check measures that; an INT8 IR keeps its float
        # parts in f32 too, as edgeprune timed and scored it
        if self.precision in ("fp32", "int8"):
            cfg["INFERENCE_PRECISION_HINT"] = "f32"
        if perf_count:
            cfg["PERF_COUNT"] = True
        core = self.ov.Core()
        return core.compile_model(core.read_model(self.path), "CPU", cfg)

    def run(self, feeds):
        np = need("numpy")
        result = self.request.infer(dict(feeds))
        return [np.array(result[o]) for o in self.compiled.outputs]

    def runner(self, feeds):
        for name, arr in feeds.items():  # bind once; the timed call is only infer()
            self.request.set_tensor(name, self.ov.Tensor(arr))
        return self.request.infer

    def layers(self, feeds, runs: int) -> list:
        request = self._compile(perf_count=True).create_infer_request()
        rows: dict = {}
        for _ in range(runs):
            request.infer(dict(feeds))
            for info in request.get_profiling_info():
                row = rows.setdefault(info.node_name, [info.node_type, info.exec_type, 0.0])
                row[2] += info.real_time.total_seconds() * 1000.0 / runs
        return [{"name": n, "op_type": t, "exec_type": e, "time_ms": ms} for n, (t, e, ms) in rows.items()]


SESSIONS = {"onnxruntime": OrtSession, "openvino": OvSession}


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def choose(manifest: dict, backend: str) -> tuple[dict, str]:
    """(artifact, runtime): the first artifact a wanted runtime can run, native formats first."""
    arts = manifest["artifacts"]
    shipped = next((a for a in arts if a["file"] == manifest.get("shipped")), None)
    if shipped is not None and backend == "auto":  # optimize's chosen artifact (e.g. model_int8.xml) comes first
        for rt in FORMAT_RUNTIMES.get(shipped.get("format"), ()):
            if rt in SESSIONS and _importable(rt):
                return shipped, rt
    wanted = list(SESSIONS) if backend == "auto" else [backend]
    if backend != "auto" and backend not in SESSIONS:
        raise RunnerError(f"unknown or unsupported backend '{backend}' for this runner", hint=f"use one of {', '.join(SESSIONS)}")
    for rt in wanted:
        fits = sorted((a for a in arts if rt in FORMAT_RUNTIMES.get(a.get("format"), ())),
                      key=lambda a: FORMAT_RUNTIMES[a["format"]].index(rt))
        if fits and _importable(rt):
            return fits[0], rt
        if fits and backend != "auto":
            need(rt)  # raises: says which package to install
    if backend != "auto":
        raise RunnerError(f"this bundle has no artifact that {backend} can run (it has {[a['file'] for a in arts]})",
                          hint="pass --backend auto")
    runtimes = sorted({rt for a in arts for rt in FORMAT_RUNTIMES.get(a.get("format"), ()) if rt in SESSIONS})
    if not runtimes:
        raise RunnerError(f"this runner cannot run any artifact of the bundle ({[a['file'] for a in arts]})",
                          hint="run TensorRT engines with trtexec, or bundle an ONNX file")
    raise RunnerError(f"no runtime for this bundle is installed for {sys.executable} (it needs one of: {', '.join(runtimes)})",
                      hint=f"{sys.executable} -m pip install {PACKAGES[runtimes[0]]}")


# -- environment and output --------------------------------------------------------------------
def environment() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    versions = {}
    for pkg in ("numpy", "onnxruntime", "openvino", "tensorrt"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
            "hostname": platform.node(), "logical_cores": os.cpu_count(), "memory_gb": mem_gb,
            "python": platform.python_version(), "versions": versions,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 2**20 if sys.platform == "darwin" else peak / 1024, 1)


def write_json_atomic(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_probe(root: Path, entries: list) -> dict:
    np = need("numpy")
    return {e["name"]: np.load(root / e["file"], allow_pickle=False) for e in entries}


def batched(feeds: dict, inputs: list, batch: int | None) -> dict:
    """The probe repeated to `batch` along dim 0 for timing (the self-check always uses the probe itself)."""
    if batch is None:
        return feeds
    np = need("numpy")
    if batch < 1:
        raise RunnerError(f"--batch must be >= 1, got {batch}", hint="e.g. --batch 8")
    lead = {s.get("name"): (s.get("shape") or [None])[0] for s in inputs}
    out = {}
    for name, arr in feeds.items():
        if isinstance(lead.get(name), int) and lead[name] > 0 and lead[name] != batch:
            raise RunnerError(f"input '{name}' has a static batch of {lead[name]}, asked for batch {batch}",
                              hint=f"pass --batch {lead[name]}")
        out[name] = np.ascontiguousarray(np.repeat(arr[:1], batch, axis=0))
    return out


def run_bundle(root: Path, backend: str = "auto", warmup: int = 20, iters: int | None = 200, seconds: float | None = None,
               rounds: int = 5, threads: int | None = None, layers: bool = False, layer_runs: int = 10,
               check_only: bool = False, batch: int | None = None) -> dict:
    """Everything but argument parsing: returns the results document."""
    manifest = load_manifest(root)
    checked = verify_files(root, manifest)
    need("numpy")
    artifact, rt = choose(manifest, backend)
    precision = manifest.get("precision") or "fp32"
    t0 = time.perf_counter()
    sess = SESSIONS[rt](root / artifact["file"], threads, precision)
    compile_s = time.perf_counter() - t0
    probe = manifest.get("probe") or {}
    feeds = load_probe(root, probe.get("inputs", []))
    refs = load_probe(root, probe.get("outputs", []))
    atol = float(probe.get("atol", 1e-4))
    outputs = compare_outputs(list(refs.values()), sess.run(feeds), list(refs), atol)
    bad = [o for o in outputs if not o["ok"]]
    if bad:  # a model that computes something else is not worth timing: refuse before anything is written
        raise RunnerError(f"{artifact['file']} on {rt} disagrees with the bundle's reference outputs on "
                          f"{[o['name'] for o in bad]} (max abs diff {max(o['max_abs_diff'] for o in bad):.3g}, atol {atol:g})",
                          hint="check the runtime version and precision on the target, or rebuild with a larger --atol")
    doc = {"schema": RESULTS_SCHEMA, "model": manifest.get("model"), "profile": manifest.get("profile"),
           "precision": precision, "artifact": artifact["file"], "backend": rt, "files_checked": checked,
           "check": {"ok": all(o["ok"] for o in outputs), "atol": atol, "outputs": outputs}, "results": [],
           "env": environment()}
    feeds = batched(feeds, manifest.get("inputs") or [], batch)
    if not check_only:
        samples, p50s = measure(sess.runner(feeds), warmup=warmup, iters=iters, seconds=seconds, rounds=rounds)
        stats = latency_stats(samples)
        first = next(iter(feeds.values()), None)
        batch = int(first.shape[0]) if first is not None and first.ndim else 1
        size = sum((root / a).stat().st_size for a in [artifact["file"], *artifact.get("extra_files", [])])
        doc["results"].append({
            "name": manifest.get("model") or root.name, "backend": rt, "batch": batch, "stats": stats,
            "round_p50_ms": p50s, "warmup": warmup, "compile_time_s": compile_s, "peak_rss_mb": peak_rss_mb(),
            "load_rss_mb": None, "artifact_bytes": size,
            "options": {"backend": rt, "version": doc["env"]["versions"].get(rt), "threads": threads, "device": "cpu",
                        "artifact": artifact["file"], "where": "device"},
            "env": doc["env"], "throughput": batch * 1000.0 / stats["mean"] if stats["mean"] > 0 else None})
    if layers:
        doc["layers"] = sorted(sess.layers(feeds, layer_runs), key=lambda r: -r["time_ms"])
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", nargs="?", default=str(Path(__file__).resolve().parent),
                    help="unpacked bundle folder or .tar.gz (default: this file's folder)")
    ap.add_argument("--backend", default="auto", help="auto | onnxruntime | openvino")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=200, help="timed calls over all rounds")
    ap.add_argument("--seconds", type=float, help="time budget instead of --iters")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--batch", type=int, help="time at this batch (the probe repeated); default: the probe's")
    ap.add_argument("--layers", action="store_true", help="also time every node (ORT profiler / OpenVINO perf counters)")
    ap.add_argument("--layer-runs", type=int, default=10)
    ap.add_argument("--check-only", action="store_true", help="verify and self-check, no timing")
    ap.add_argument("--out", default="results.json", help="results JSON to write")
    args = ap.parse_args(argv)
    workdir = None
    try:
        src = Path(args.bundle)
        if src.is_file():
            workdir = Path(tempfile.mkdtemp(prefix="edgeprune-bundle-"))
            root = safe_extract(src, workdir)
        elif src.is_dir():
            root = bundle_root(src)
        else:
            raise RunnerError(f"bundle not found: {src}", hint="pass the bundle folder or .tar.gz")
        doc = run_bundle(root, args.backend, args.warmup, args.iters, args.seconds, args.rounds, args.threads,
                         args.layers, args.layer_runs, args.check_only, args.batch)
        write_json_atomic(Path(args.out), doc)
    except RunnerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    worst = max((o["max_abs_diff"] for o in doc["check"]["outputs"]), default=0.0)
    print(f"check: {'ok' if doc['check']['ok'] else 'FAILED'} on {doc['backend']} ({doc['artifact']}), "
          f"{doc['files_checked']} files verified, max abs diff {worst:.3g}")
    for r in doc["results"]:
        s = r["stats"]
        print(f"latency ms: p50 {s['p50']:.3f} p90 {s['p90']:.3f} p99 {s['p99']:.3f} mean {s['mean']:.3f} ± {s['std']:.3f} "
              f"(n={s['n']}, {len(r['round_p50_ms'])} rounds), {r['throughput']:.1f} inf/s")
    print(f"results: {args.out}")
    return 0 if doc["check"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
