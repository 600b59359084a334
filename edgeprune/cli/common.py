"""Shared pieces of the command modules: the consoles, the --input-shape option, --profile, a spinner."""
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
