"""Build a report from real measurements and check it in headless Chromium; saves
benchmarks/results/report_screenshot.png (first screen), report_full.png and report.html.

What is measured (nothing is made up; this host, ONNX Runtime CPU):
  - an MLP 512 -> 2048 -> 10 (ONNX built directly) and three width-pruned variants (fc1 columns kept by
    L2 norm, fc2 rows to match), timed together in interleaved rounds at batch 8;
  - "accuracy" of each configuration = top-1 agreement with the dense model on 2048 random inputs
    (a stand-in for task accuracy, which this synthetic model does not have);
  - predicted latency = dense p50 x (MACs ratio), the naive prediction a plan would make, vs measured p50;
  - the selected variant is bundled and run through the standalone runner (subprocess, --layers),
    its results file imported as device results.

    python benchmarks/report_screenshot.py
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).parent
RESULTS = HERE / "results"
D_IN, HIDDEN, D_OUT, BATCH = 512, 2048, 10, 8
KEEP = (2048, 1536, 1024, 512)
SELECTED = 1024


def weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    # Column scales vary so that magnitude pruning has something to choose.
    w1 = (rng.standard_normal((D_IN, HIDDEN)) * rng.gamma(2.0, 0.05, HIDDEN)).astype(np.float32)
    return w1, (rng.standard_normal(HIDDEN) * 0.1).astype(np.float32), (rng.standard_normal((HIDDEN, D_OUT)) * 0.05).astype(np.float32)


def pruned_onnx(path: Path, keep: int) -> tuple[Path, np.ndarray]:
    w1, b1, w2 = weights()
    idx = np.sort(np.argsort(-np.linalg.norm(w1, axis=0))[:keep])
    inits = [numpy_helper.from_array(a, n) for n, a in (("w1", w1[:, idx]), ("b1", b1[idx]), ("w2", w2[idx]))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"), helper.make_node("MatMul", ["r", "w2"], ["logits"], name="fc2")]
    graph = helper.make_graph(nodes, f"mlp{keep}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", D_IN])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", D_OUT])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path, idx


def chromium(args: list[str], url: str, profile: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        sys.exit("chromium not installed: apt-get install -y chromium")
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", *args, url], capture_output=True, text=True, timeout=120)


def main() -> None:
    import onnxruntime as ort

    from edgeprune.backends import BackendOptions, get_backend
    from edgeprune.measurement.bench import benchmark_sessions, compare
    from edgeprune.deploy.bundle import build_bundle, unpack_bundle
    from edgeprune.env import environment
    from edgeprune.report.html import write_report

    with tempfile.TemporaryDirectory(prefix="edgeprune-report-demo-") as tmp:
        tmp = Path(tmp)
        models = {k: pruned_onnx(tmp / "models" / f"mlp_w{k}.onnx", k)[0] for k in KEEP}
        sessions = []
        for k, path in models.items():
            backend = get_backend("onnxruntime", BackendOptions(threads=1)).compile(path)
            feeds = {"x": np.random.default_rng(1).standard_normal((BATCH, D_IN)).astype(np.float32)}
            sessions.append(("dense" if k == HIDDEN else f"width-{k}", backend, feeds))
        results = benchmark_sessions(sessions, batch=BATCH, warmup=20, iters=300, rounds=5)
        speedups = compare(results)

        probe = np.random.default_rng(2).standard_normal((2048, D_IN)).astype(np.float32)
        top1 = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": probe})[0].argmax(1)
                for k, p in models.items()}
        dense_p50 = results[0].stats.p50
        out = tmp / "out"
        out.mkdir()
        shutil.copy(models[SELECTED], out / "model.onnx")
        doc = {
            "schema": "edgeprune.report/1", "model": "mlp-512-2048-10 (width pruning demo)", "profile": "host", "precision": "fp32",
            "env": environment(), "results": [r.to_dict() for r in results], "speedups": [s.__dict__ for s in speedups],
            "layers": [{"name": "fc1 (out)", "orig_width": HIDDEN, "kept_width": SELECTED, "sparsity": 0.0},
                       {"name": "fc2 (in)", "orig_width": HIDDEN, "kept_width": SELECTED, "sparsity": 0.0}],
            "configs": [{"name": r.name, "accuracy": float((top1[k] == top1[HIDDEN]).mean()), "latency_ms": r.stats.p50,
                         "selected": k == SELECTED} for k, r in zip(KEEP, results)],
            "predicted_vs_measured": [{"name": r.name, "predicted_ms": dense_p50 * k / HIDDEN, "measured_ms": r.stats.p50}
                                      for k, r in zip(KEEP, results)],
        }
        (out / "report.json").write_text(json.dumps(doc, indent=2, default=str))
        build_bundle(out, tmp / "selected.tar.gz", name=f"width-{SELECTED}")
        root = unpack_bundle(tmp / "selected.tar.gz", tmp / "device")
        subprocess.run([sys.executable, str(root / "edgeprune_run.py"), "--threads", "1", "--batch", str(BATCH), "--layers", "--iters", "200",
                        "--out", str(out / "results-host.json")], check=True)
        html_path, md_path = write_report(out)

        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(html_path, RESULTS / "report.html")
        shutil.copy(md_path, RESULTS / "report.md")
        url = html_path.resolve().as_uri()
        dom = chromium(["--dump-dom"], url, tmp / "profile").stdout
        n_img = dom.count("src=\"data:image/png;base64,")
        assert 'id="summary"' in dom and n_img == 5, f"summary table or plots missing ({n_img} images)"
        for name, size in (("report_screenshot.png", "1400,1000"), ("report_full.png", "1400,3400")):
            chromium([f"--screenshot={RESULTS / name}", f"--window-size={size}"], url, tmp / "profile")
            assert (RESULTS / name).stat().st_size > 10_000, f"{name} looks empty"
    for r, s in zip(results[1:], speedups):
        print(f"{r.name}: p50 {r.stats.p50:.3f} ms, {s}")
    print(f"chromium DOM: summary table and {n_img} embedded plots; screenshots in {RESULTS}")


if __name__ == "__main__":
    main()
