"""`edgeprune bundle`, `bench-bundle`, `bench-remote` and `report`: ship a model, time it where it runs, show it."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from edgeprune.errors import BenchmarkError, ConfigError


def _runner_backends() -> str:
    """The --backend choices: the runtimes the device-side runner has sessions for."""
    from edgeprune.deploy.bundle import load_runner

    return " | ".join(("auto", *load_runner().SESSIONS))


def _timing_options(f):
    """The runner's timing flags, with `edgeprune bench`'s names and defaults."""
    opts = [
        click.option("--backend", default="auto", show_default=True, help=_runner_backends() + " (on the target)."),
        click.option("--warmup", default=20, show_default=True, type=int),
        click.option("--iters", default=200, show_default=True, type=int, help="Timed iterations (over all rounds)."),
        click.option("--seconds", type=float, help="Time budget instead of --iters."),
        click.option("--rounds", default=5, show_default=True, type=int),
        click.option("--threads", type=int, help="Intra-op threads (default: the runtime's)."),
        click.option("--batch", type=int, help="Time at this batch (probe repeated); default: the probe's (1)."),
        click.option("--layers", is_flag=True, help="Also time every node (ORT profiler / OpenVINO perf counters)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _runner_args(backend, warmup, iters, seconds, rounds, threads, batch, layers) -> list[str]:
    # Checked here so a bad count fails before copying anything to a device.
    if warmup < 0 or rounds < 1 or (seconds is None and iters < rounds) or (seconds is not None and seconds <= 0):
        raise ConfigError(f"bad timing counts: warmup={warmup} iters={iters} seconds={seconds} rounds={rounds}",
                          hint="warmup >= 0, rounds >= 1, iters >= rounds, seconds > 0")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}", hint="e.g. --threads 4")
    args = ["--backend", backend, "--warmup", str(warmup), "--iters", str(iters), "--rounds", str(rounds)]
    args += ["--seconds", str(seconds)] if seconds is not None else []
    if batch is not None and batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}", hint="e.g. --batch 8")
    args += ["--threads", str(threads)] if threads else []
    args += ["--batch", str(batch)] if batch else []
    return args + (["--layers"] if layers else [])


def _show(doc: dict) -> None:
    from edgeprune.cli.common import console
    from edgeprune.report.html import bench_result_from_dict
    from edgeprune.report.tables import bench_table, environment_line

    check = doc.get("check") or {}
    worst = max((o.get("max_abs_diff", 0.0) for o in check.get("outputs", [])), default=0.0)
    where = (doc.get("remote") or {}).get("target") or "this host"
    console.print(f"self-check on {where}: {'[green]ok[/green]' if check.get('ok') else '[red]FAILED[/red]'} "
                  f"({doc.get('backend')}, {doc.get('artifact')}, {doc.get('files_checked')} files verified, max abs diff {worst:.3g})")
    results = [bench_result_from_dict(r) for r in doc.get("results") or []]
    if results:
        console.print(bench_table(results, title=f"latency (ms) on {where}"))
    if doc.get("env"):
        console.print(f"[dim]{environment_line(doc['env'])}[/dim]")
    if doc.get("layers"):
        console.print(f"[dim]{len(doc['layers'])} layer timings in the results JSON[/dim]")


def _finish(doc: dict, json_path: str | None) -> None:
    from edgeprune._io import write_text_atomic

    _show(doc)
    if json_path:
        write_text_atomic(json_path, json.dumps(doc, indent=2))
    if not (doc.get("check") or {}).get("ok"):
        bad = [o["name"] for o in doc["check"].get("outputs", []) if not o.get("ok")]
        raise BenchmarkError(f"the bundle's outputs disagree with its reference outputs on {bad}"
                             + (f" (results kept in {json_path})" if json_path else ""),
                             hint="check the runtime version and precision on the target")


@click.command("bundle")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Bundle to write (NAME.tar.gz).")
@click.option("--name", help="Model name in the manifest (default: from OUTDIR/manifest.json or the artifact).")
@click.option("--atol", type=float, help="Self-check tolerance (relative above |1|); default 1e-4.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the probe input.")
def bundle_cmd(outdir, output, name, atol, seed):
    """Pack OUTDIR's runtime artifacts, a manifest, probe data and the standalone runner into one .tar.gz."""
    from edgeprune.deploy.bundle import build_bundle, load_runner
    from edgeprune.cli.common import console

    manifest = build_bundle(outdir, output, name=name, seed=seed, atol=atol)
    arts = ", ".join(a["file"] for a in manifest["artifacts"])
    console.print(f"wrote {output}: {manifest['model']} ({arts}), {len(manifest['files'])} files with sha256, "
                  f"probe {[i['shape'] for i in manifest['probe']['inputs']]}")
    # The manifest cannot list its own checksum: the archive's lets the user check the copy on the device.
    console.print(f"sha256 {load_runner().sha256_file(Path(output))}  {Path(output).name}")
    console.print(f"[dim]on the device: tar xzf {Path(output).name} && python3 {Path(output).name[:-7]}/edgeprune_run.py --layers[/dim]")


@click.command("bench-bundle")
@click.argument("bundle", type=click.Path(dir_okay=False))
@_timing_options
@click.option("--in-process", is_flag=True, help="Run the runner's code in this process instead of a subprocess.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results JSON (name it results*.json for `report`).")
def bench_bundle_cmd(bundle, backend, warmup, iters, seconds, rounds, threads, batch, layers, in_process, json_path):
    """Verify, self-check and time BUNDLE on this host exactly as the device runner does."""
    from edgeprune.deploy.bundle import RUNNER_NAME, run_bundle_in_process, unpack_bundle

    args = _runner_args(backend, warmup, iters, seconds, rounds, threads, batch, layers)
    with tempfile.TemporaryDirectory(prefix="edgeprune-bundle-") as tmp:
        root = unpack_bundle(bundle, Path(tmp) / "b")
        if in_process:
            doc = run_bundle_in_process(root, backend=backend, warmup=warmup, iters=iters, seconds=seconds, rounds=rounds,
                                        threads=threads, layers=layers, batch=batch)
        else:
            out = Path(tmp) / "results.json"
            proc = subprocess.run([sys.executable, str(root / RUNNER_NAME), str(root), "--out", str(out), *args],
                                  capture_output=True, text=True)
            if proc.returncode not in (0, 1):
                errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
                why = errors[-1][7:] if errors else (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                raise BenchmarkError(f"the bundle runner failed: {why}")
            doc = json.loads(out.read_text(encoding="utf-8"))
    _finish(doc, json_path)


def _default_results(target: str, output: str | None) -> Path:
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", target.split("@", 1)[-1].split(":", 1)[0].strip("[]"))
    name = f"results-{host}.json"
    if output is None:
        return Path(name)
    return Path(output) / name if Path(output).is_dir() else Path(output)


@click.command("bench-remote")
@click.argument("target")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("-i", "--identity", type=click.Path(dir_okay=False), help="SSH private key (default: your ssh setup).")
@click.option("--python", "python", default="python3", show_default=True, help="Python on the target.")
@_timing_options
@click.option("--timeout", default=600, show_default=True, type=float, help="Seconds allowed per ssh/scp step.")
@click.option("-o", "--output", type=click.Path(), help="Results JSON, or a folder for results-HOST.json (default ./results-HOST.json).")
def bench_remote_cmd(target, bundle, identity, python, backend, warmup, iters, seconds, rounds, threads, batch, layers, timeout,
                     output):
    """Copy BUNDLE to TARGET (user@host[:port]) over SSH, run it there, bring the results back."""
    from edgeprune.deploy.remote import parse_target, run_remote

    parse_target(target)  # fail on a bad target before anything else
    args = _runner_args(backend, warmup, iters, seconds, rounds, threads, batch, layers)
    if not Path(bundle).is_file():
        raise ConfigError(f"bundle not found: {bundle}", hint="build one with `edgeprune bundle OUTDIR -o NAME.tar.gz`")
    doc = run_remote(target, bundle, identity=identity, python=python, runner_args=args, timeout=timeout)
    path = _default_results(target, output)
    _finish(doc, str(path))
    from edgeprune.cli.common import console

    console.print(f"results: {path} (`edgeprune report {path.parent}` adds them to the report)")


@click.command("report")
@click.argument("source", type=click.Path())
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), help="Where to write report.html/.md (default: beside SOURCE).")
def report_cmd(source, output_dir):
    """Write report.html (self-contained, plots embedded) and report.md from OUTDIR or a bench --json file."""
    from edgeprune.cli.common import console
    from edgeprune.report.html import write_report

    html_path, md_path = write_report(source, output_dir)
    console.print(f"wrote {html_path} and {md_path}")


COMMANDS = [bundle_cmd, bench_bundle_cmd, bench_remote_cmd, report_cmd]
