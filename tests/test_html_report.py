"""`edgeprune report`: report.html/.md from a bench --json file, a full report.json and device results;
missing sections are skipped; the page is checked in headless Chromium."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from edgeprune.cli import main
from edgeprune.errors import ConfigError
from edgeprune.report.html import render, write_report
from test_bundle import mlp_onnx

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _result(name, p50, rounds, samples=None, **extra):
    stats = {"n": 40, "mean": p50 * 1.05, "std": p50 * 0.1, "min": p50 * 0.8, "p50": p50, "p90": p50 * 1.2,
             "p95": p50 * 1.3, "p99": p50 * 1.6, "max": p50 * 2}
    r = {"name": name, "backend": "onnxruntime", "batch": 1, "stats": stats, "round_p50_ms": rounds, "warmup": 5,
         "env": {"cpu": "Test CPU", "logical_cores": 2, "memory_gb": 8, "python": "3.11", "versions": {"onnxruntime": "1.32"},
                 "date": "2026-01-01"}, **extra}
    if samples:
        r["samples_ms"] = samples
    return r


def full_doc() -> dict:
    return {
        "schema": "edgeprune.report/1", "model": "tiny-bert", "profile": "rpi5", "precision": "fp32",
        "results": [_result("dense", 2.0, [2.0, 2.1, 1.9], samples=[1.8, 2.0, 2.1, 2.4, 1.9]),
                    _result("pruned-50", 1.2, [1.2, 1.1, 1.3]), _result("sparse-2:4", 1.9, [1.8, 2.2, 1.9]),
                    _result("int8", 1.0, [1.0, 1.0, 1.0], accelerated=False)],
        "speedups": [{"baseline": "dense", "candidate": "pruned-50", "median": 1.66, "min": 1.5, "max": 1.8, "rounds": 3},
                     {"baseline": "dense", "candidate": "sparse-2:4", "median": 1.05, "min": 0.95, "max": 1.1, "rounds": 3},
                     {"baseline": "dense", "candidate": "int8", "median": 2.0, "min": 1.9, "max": 2.1, "rounds": 3}],
        "layers": [{"name": f"layer{i}.ffn", "orig_width": 1024, "kept_width": 1024 - 128 * i, "sparsity": 0.1 * i} for i in range(4)],
        "configs": [{"name": f"c{i}", "accuracy": 0.9 - 0.02 * i, "latency_ms": 2.0 - 0.3 * i, "selected": i == 2} for i in range(4)],
        "predicted_vs_measured": [{"name": "pruned-50", "predicted_ms": 1.1, "measured_ms": 1.2}, {"name": "dense", "predicted_ms": 2.0, "measured_ms": 2.0}],
    }


def device_doc() -> dict:
    return {"schema": "edgeprune.device-results/1", "model": "tiny-bert", "backend": "onnxruntime", "artifact": "model.onnx",
            "check": {"ok": True, "atol": 1e-4, "outputs": [{"name": "logits", "shape": [1, 2], "max_abs_diff": 1e-6, "cosine": 1.0,
                                                              "tolerance": 1e-4, "ok": True}]},
            "results": [_result("pruned-50", 7.5, [7.4, 7.6])], "remote": {"target": "pi@rpi:22"},
            "layers": [{"name": f"n{i}", "op_type": "MatMul", "exec_type": "CPUExecutionProvider", "time_ms": 0.5 / (i + 1)} for i in range(5)],
            "env": {"cpu": "Cortex-A76", "hostname": "rpi", "versions": {"onnxruntime": "1.20"}}}


def _imgs(page: str) -> int:
    return len(re.findall(r"<img [^>]*src=['\"]data:image/png;base64,[A-Za-z0-9+/=]{100,}", page))


def test_full_report_has_every_section_and_measured_verdicts(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(full_doc()))
    (tmp_path / "results-rpi.json").write_text(json.dumps(device_doc()))
    html_path, md_path = write_report(tmp_path)
    page, md = html_path.read_text(), md_path.read_text()
    assert _imgs(page) == 5  # latency, layers, configs, predicted, device layers
    rows = re.findall(r"<tr>(.*?)</tr>", page.split("<tbody>")[1])
    verdicts = [re.findall(r"<td[^>]*>(.*?)</td>", r)[10] for r in rows]
    assert verdicts == ["baseline", "yes", "no (within noise)", "no", ""]
    assert "pi@rpi:22" in page and "Cortex-A76" in page and "Test CPU" in page and "profile rpi5" in page
    # summary table and environment come before the first plot (first screen)
    assert page.index("id='summary'") < page.index("<img") and page.index("Test CPU") < page.index("<img")
    assert "| pruned-50 | onnxruntime | pi@rpi:22 |" in md and "## Slowest layers on pi@rpi:22" in md


def test_missing_sections_are_skipped(tmp_path):
    page, _ = render({"configs": full_doc()["configs"]}, [])
    assert _imgs(page) == 1 and "<tbody></tbody>" in page
    page, _ = render({"results": [_result("only", 1.0, [1.0])]}, [])
    assert _imgs(page) == 1 and ">only<" in page
    with pytest.raises(ConfigError, match="nothing to report"):
        (tmp_path / "report.json").write_text(json.dumps({"model": "x"}))
        write_report(tmp_path)


def test_report_from_bench_json(tmp_path):
    a, b = mlp_onnx(tmp_path / "dense.onnx", hidden=256), mlp_onnx(tmp_path / "small.onnx", hidden=64)
    js = tmp_path / "bench" / "bench.json"
    runner = CliRunner()
    result = runner.invoke(main, ["bench", str(a), str(b), "--warmup", "2", "--iters", "10", "--rounds", "2", "--json", str(js)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["report", str(js), "-o", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "rep" / "report.html").read_text()
    assert _imgs(page) == 1 and ">dense<" in page and ">small<" in page and "baseline" in page
    assert "| small | onnxruntime | host |" in (tmp_path / "rep" / "report.md").read_text()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "report.json").write_text("{broken")
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and result.output.startswith("error: cannot read") and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "report.md").exists()
    (tmp_path / "report.json").write_text(json.dumps({"results": [{"name": "x", "stats": {"p50": 1}}]}))
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no usable stats" in result.output and not (tmp_path / "report.html").exists()


def chromium(args: list[str], url: str, profile) -> subprocess.CompletedProcess:
    """Headless Chromium with everything that could reach the network turned off."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", *args, url], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(full_doc()))
    (tmp_path / "results-rpi.json").write_text(json.dumps(device_doc()))
    html_path, _ = write_report(tmp_path)
    url = html_path.resolve().as_uri()
    dom = chromium(["--dump-dom"], url, tmp_path / "profile").stdout
    assert _imgs(dom) == 5 and 'id="summary"' in dom and dom.count("<tr>") == 6  # header + 5 rows
    shot = tmp_path / "shot.png"
    chromium([f"--screenshot={shot}", "--window-size=1400,1000"], url, tmp_path / "profile")
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (1000, 1400) and pixels.std() > 0.05  # rendered content, not a blank page
