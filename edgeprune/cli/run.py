"""`edgeprune export` and `edgeprune bench`: load a model, export it validated, time it on real runtimes."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from edgeprune.backends import DEFAULT as DEFAULT_RUNTIME
from edgeprune.backends import names as backend_names
from edgeprune.errors import ConfigError

from edgeprune.cli.common import (console, conversion_options, conversions, err_console, input_shape_option, stage,
                                  write_conversions)


@click.command("export")
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@input_shape_option
@click.option("--opset", default=18, show_default=True, type=int)
@click.option("--dynamic-batch", is_flag=True, help="Make the batch dimension dynamic.")
@conversion_options
@click.option("--atol", default=1e-4, show_default=True, type=float, help="Validation tolerance (relative above |1|).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the validation report as JSON.")
def export_cmd(model, output, input_shapes, opset, dynamic_batch, atol, json_path, **options):
    """Export MODEL to ONNX (and OpenVINO IR), validated against PyTorch on the runtime."""
    import json

    from edgeprune._io import write_text_atomic
    from edgeprune.exporter import REFERENCE, export, torch_outputs
    from edgeprune.models import load_model
    from edgeprune.report.tables import export_table

    if not output.endswith(".onnx"):
        raise ConfigError(f"--output {output} must end in .onnx", hint="e.g. -o model.onnx")
    targets = conversions(options)
    with stage(f"loading {model}"):
        loaded = load_model(model, input_shapes)
    if loaded.module is None:
        raise ConfigError(f"{model} is already ONNX; export needs a PyTorch model", hint="pass a model spec, HF folder or .pt2")
    with stage(f"exporting to {output} and validating on {REFERENCE}"):
        reports = [export(loaded, None, output, opset=opset, dynamic_batch=dynamic_batch, atol=atol)]
    if targets:
        feeds = {n: t.numpy() for n, t in zip(loaded.input_names, loaded.example_inputs)}
        reports += write_conversions(output, targets, (torch_outputs(loaded.module, loaded.example_inputs), feeds), atol)
    console.print(export_table(reports))
    if json_path:
        write_text_atomic(json_path, json.dumps([r.to_dict() for r in reports], indent=2))


def check_artifact(path: Path) -> None:
    """One-line ModelLoadError for a damaged runtime file: an .onnx that is truncated, not ONNX or missing its
    external data; an OpenVINO .xml without its .bin."""
    from edgeprune.errors import ModelLoadError
    from edgeprune.models import check_onnx_file

    if path.suffix == ".onnx":
        check_onnx_file(path)
    elif path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
        raise ModelLoadError(f"{path}: its weights file {path.with_suffix('.bin').name} is missing",
                             hint="keep the .bin next to the .xml (OpenVINO IR is the pair)")


def _sessions(models, backends, input_shapes, threads, batch, tmp: Path):
    """(label, compiled backend) for every model x backend; each model is exported once."""
    from edgeprune.backends import BackendOptions, get_backend
    from edgeprune.exporter import export
    from edgeprune.models import load_model
    from edgeprune.measurement.session import ARTIFACT_SUFFIXES

    out = []
    for i, spec in enumerate(models):
        path = Path(spec)
        loaded = None if path.suffix in ARTIFACT_SUFFIXES else load_model(spec, input_shapes, batch=batch)
        onnx_path = path if loaded is None else loaded.onnx_path
        label = path.stem if loaded is None else loaded.name
        for name in backends:
            backend = get_backend(name, BackendOptions(threads=threads))
            backend.require()
            if backend.name == "torch":
                if loaded is None:
                    raise ConfigError(f"the torch backend cannot run {path.name}", hint=f"use a runtime that loads ONNX, e.g. --backend {DEFAULT_RUNTIME}")
                target = loaded
            else:
                if onnx_path is None:
                    onnx_path = tmp / f"{i}_{label}.onnx"
                    with stage(f"exporting {label} to ONNX (validated)"):
                        export(loaded, None, onnx_path)
                if not Path(onnx_path).is_file():
                    from edgeprune.errors import ModelLoadError

                    raise ModelLoadError(f"model file not found: {onnx_path}", hint="check the path")
                check_artifact(Path(onnx_path))
                target = onnx_path
            with stage(f"compiling {label} on {backend.name}"):
                backend.compile(target)
            out.append((label, backend))
    return out


@click.command("bench")
@click.argument("models", nargs=-1)
@click.option("-b", "--backend", "backends", multiple=True,
              help=f"{' | '.join(backend_names())} (repeat; default {DEFAULT_RUNTIME}, or every runtime this host "
                   "times with no MODEL).")
@input_shape_option
@click.option("--batch", type=int, help="Batch size (default: the model's static batch, else 1).")
@click.option("--threads", type=int, help="Intra-op threads (default: the runtime's).")
@click.option("--warmup", default=20, show_default=True, type=int)
@click.option("--iters", default=200, show_default=True, type=int, help="Timed iterations per candidate (over all rounds).")
@click.option("--seconds", type=float, help="Time budget per candidate instead of --iters.")
@click.option("--rounds", default=5, show_default=True, type=int, help="Interleaved rounds (spread of the speedup).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results as JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write results as Markdown.")
@click.option("--remote", metavar="USER@HOST[:PORT]",
              help="Run a bundle (the one MODEL, a .tar.gz) on this device over SSH; same as `edgeprune bench-remote`.")
@click.pass_context
def bench_cmd(ctx, models, backends, input_shapes, batch, threads, warmup, iters, seconds, rounds, json_path, md_path, remote):
    """Benchmark MODEL [MODEL2 ...] on real runtimes; with no MODEL, the packaged MiniLM-L6 on ORT and OpenVINO."""
    if remote:
        if len(models) != 1 or not models[0].endswith((".tar.gz", ".tgz")):
            raise ConfigError("--remote runs exactly one bundle", hint="edgeprune bench --remote user@host model.tar.gz")
        from edgeprune.cli.deploy import bench_remote_cmd

        return ctx.invoke(bench_remote_cmd, target=remote, bundle=models[0], warmup=warmup, iters=iters, seconds=seconds,
                          rounds=rounds, threads=threads, batch=batch, output=json_path,
                          backend=backends[0] if backends else "auto")
    from edgeprune._io import write_text_atomic
    from edgeprune.backends import DEFAULT, measurable_here
    from edgeprune.measurement.bench import benchmark_sessions, compare
    from edgeprune.report.tables import bench_json, bench_markdown, bench_table, environment_line, settle_note

    if batch is not None and batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}", hint="e.g. --batch 8")
    if not models:
        models, backends = ("minilm",), backends or tuple(measurable_here())
    backends = backends or (DEFAULT,)
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-") as tmp:
        sessions = _sessions(models, backends, input_shapes, threads, batch or 1, Path(tmp))
        triples = [(label, b, b.prepare_inputs(None, batch=batch)) for label, b in sessions]
        with Progress(TextColumn("timing"), BarColumn(), TextColumn("round {task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=err_console, transient=True) as progress:
            task = progress.add_task("rounds", total=rounds)
            results = benchmark_sessions(triples, batch=batch, warmup=warmup, iters=iters, seconds=seconds, rounds=rounds,
                                         progress=lambda done, total: progress.update(task, completed=done))
    speedups = compare(results) if len(results) > 1 else []
    console.print(bench_table(results, speedups))
    console.print(f"[dim]{environment_line(results[0].env)}[/dim]")
    console.print(f"[dim]{rounds} interleaved rounds{settle_note(results[0])}; speedup = median of per-round p50 ratios (min-max over rounds)[/dim]")
    if json_path:
        write_text_atomic(json_path, bench_json(results, speedups))
    if md_path:
        write_text_atomic(md_path, bench_markdown(results, speedups))


COMMANDS = [export_cmd, bench_cmd]
