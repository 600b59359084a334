"""`edgeprune` command line. Every user error: one line with the fix, exit 2; traceback only with --debug."""
from __future__ import annotations

import signal
import sys

import click

from edgeprune.errors import EdgepruneError


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every `with atomic_dir(...)` unwinds and deletes its temp copy."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised by a real subprocess in the tests
    raise Terminated()


def _resume_hint(ctx: click.Context) -> str:
    # only optimize checkpoints its recovery; elsewhere a rerun starts from scratch
    return "; an interrupted recovery resumes with --resume OUTDIR" if ctx.invoked_subcommand == "optimize" else ""


class _Group(click.Group):
    """Turns EdgepruneError into one line on stderr and exit 2 (unless --debug); Ctrl-C into exit 130 and SIGTERM
    into 143, each with one line, after the atomic writers have removed their partial output."""

    def invoke(self, ctx: click.Context):
        signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return super().invoke(ctx)
        except EdgepruneError as err:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except (KeyboardInterrupt, click.exceptions.Abort):
            click.echo("interrupted (Ctrl-C): no partial output was written" + _resume_hint(ctx), err=True)
            ctx.exit(130)
        except Terminated:
            click.echo("terminated (SIGTERM): no partial output was written" + _resume_hint(ctx), err=True)
            ctx.exit(143)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="edgeprune")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Hardware-aware pruning, export and measured benchmarking of PyTorch models."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register() -> None:
    """Each command module lists its click commands in COMMANDS and imports its heavy code lazily."""
    from edgeprune.cli import deploy, optimize, profiles, prune, quantize, run, sparsify, sweep

    for module in (profiles, run, prune, sparsify, quantize, deploy, optimize, sweep):
        for cmd in module.COMMANDS:
            main.add_command(cmd)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
