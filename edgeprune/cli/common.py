"""Shared pieces of the command modules: the consoles, the --input-shape option, --profile, the per-runtime
conversion options, a spinner."""
from __future__ import annotations

import contextlib
from typing import Iterator

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

# Wide enough for the result tables when output goes to a file or pipe (rich defaults to 80 there).
console = Console(width=None if Console().is_terminal else 180)
err_console = Console(stderr=True)

input_shape_option = click.option(
    "--input-shape", "input_shapes", multiple=True, metavar="SPEC",
    help="Input shape, e.g. 1x3x224x224, 1x128:int64 or input_ids=1x128:int64 (repeat per input).")


def conversion_options(f):
    """`--<runtime> PATH` for each registered runtime that loads its own format (OpenVINO IR), from the registry."""
    from edgeprune.backends import backend_classes

    for cls in reversed([c for c in backend_classes() if c.converts_onnx]):
        suffix = cls.capabilities.artifact_suffix
        f = click.option(f"--{cls.name}", f"convert_{cls.name}", type=click.Path(dir_okay=False), metavar=f"PATH{suffix}",
                         help=f"Also write validated {cls.capabilities.export_format} here (with its companions).")(f)
    return f


def conversions(options: dict) -> dict[str, str]:
    """runtime -> output path, for the conversion options given; each path checked for the runtime's suffix."""
    from edgeprune.backends import capabilities
    from edgeprune.errors import ConfigError

    out = {k.removeprefix("convert_"): v for k, v in options.items() if k.startswith("convert_") and v}
    for runtime, path in out.items():
        suffix = capabilities(runtime).artifact_suffix
        if not path.endswith(suffix):
            raise ConfigError(f"--{runtime} {path} must end in {suffix}", hint=f"e.g. --{runtime} model{suffix}")
    return out


def write_conversions(onnx_path: str, paths: dict[str, str], reference, atol: float | None = None) -> list:
    """Convert the validated ONNX file for each runtime in `paths`, each checked against `reference` on it."""
    from edgeprune.exporter import DEFAULT_ATOL, convert

    reports = []
    for runtime, path in paths.items():
        with stage(f"converting to {path} and validating on {runtime}"):
            reports.append(convert(onnx_path, path, runtime, reference=reference, atol=atol or DEFAULT_ATOL))
    return reports


def target_or_none(profile: str | None, runtime: str | None):
    """The Target --profile and --runtime name (None without --profile; --runtime alone is refused)."""
    from edgeprune.errors import ConfigError

    if not profile:
        if runtime:
            raise ConfigError(f"--runtime {runtime} needs --profile (the device it runs on)",
                              hint=f"add --profile host (this machine) or a device: --profile xeon-spr --runtime {runtime}")
        return None
    from edgeprune.targets.target import target

    return target(profile, runtime=runtime)


def profile_or_none(name: str | None):
    """The DeviceProfile a --profile option names, or None when it was not given (prune, quantize, sparsify)."""
    if not name:
        return None
    from edgeprune.targets.profiles import load_profile

    return load_profile(name)


@contextlib.contextmanager
def stage(text: str) -> Iterator[None]:
    """A spinner with elapsed time for a step that may take more than a couple of seconds."""
    with Progress(SpinnerColumn(), TextColumn(text), TimeElapsedColumn(), console=err_console, transient=True) as p:
        p.add_task(text, total=None)
        yield
