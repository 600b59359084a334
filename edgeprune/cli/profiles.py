"""`edgeprune profiles list|show|validate|probe`. Profile code is imported inside each command so that
`edgeprune --help` stays fast."""
from __future__ import annotations

import json
import sys

import click

from edgeprune.errors import ConfigError, ProfileError


@click.group()
def profiles() -> None:
    """Device profiles: list, show, validate, probe."""


def _console():
    from rich.console import Console

    # CliRunner and pipes are not terminals: a wide fixed width keeps table rows on one line each
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False, soft_wrap=False)


def _multiples(p) -> str:
    parts = [f"{prec}:{p.channel_multiple(None, prec)}" for prec in ("fp32", "fp16", "int8") if prec in p.precisions]
    return " ".join(parts)


def _two_four(p) -> str:
    """Best 2:4 verdict over the profile's runtimes, with the runtime that gives it."""
    best = ("no", "")
    rank = {"no": 0, "memory-only": 1, "yes": 2}
    for rt in p.runtime_names():
        verdict, _ = p.accelerates(rt, "2:4")
        if rank[verdict] > rank[best[0]]:
            best = (verdict, rt)
    return f"{best[0]} ({best[1]})" if best[1] else "no"


@profiles.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def list_cmd(as_json: bool) -> None:
    """List the shipped device profiles."""
    from edgeprune.targets.profiles import list_profiles

    rows = [{"name": p.name, "vendor": p.vendor, "kind": p.kind, "runtimes": p.runtime_names(),
             "precisions": list(p.precisions), "channel_multiple": _multiples(p), "2:4": _two_four(p)}
            for p in list_profiles()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} device profiles (plus 'host': the probed machine)")
    for col in ("name", "vendor", "kind", "runtimes", "precisions", "channel multiple", "2:4 accelerated"):
        table.add_column(col, no_wrap=col == "name")
    for r in rows:
        table.add_row(r["name"], r["vendor"], r["kind"], ", ".join(r["runtimes"]), ", ".join(r["precisions"]),
                      r["channel_multiple"], r["2:4"])
    _console().print(table)


@profiles.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
def show_cmd(name: str, as_json: bool) -> None:
    """Print one profile (a shipped name, a .yaml path, or 'host') as YAML or JSON."""
    from edgeprune.targets.profiles import load_profile

    profile = load_profile(name)
    click.echo(json.dumps(profile.to_dict(), indent=2, ensure_ascii=False) if as_json else profile.to_yaml().rstrip())


@profiles.command("validate")
@click.argument("files", nargs=-1, required=True)
def validate_cmd(files: tuple[str, ...]) -> None:
    """Check profile files against the schema: 'ok: FILE', or one line per invalid file with every problem and its field
    path (one file given: that line is the error itself)."""
    from edgeprune.targets.profiles import load_profile_file

    bad: list[tuple[str, str]] = []
    for path in files:
        try:
            load_profile_file(path)
        except ProfileError as err:
            problems = getattr(err, "problems", None) or [("", err.message)]
            text = "; ".join(f"field '{f}': {m}" if f else m for f, m in problems)
            bad.append((path, text[len(path) + 2:] if text.startswith(f"{path}: ") else text))
            continue
        click.echo(f"ok: {path}")
    if len(files) == 1 and bad:
        raise ProfileError(f"{bad[0][0]}: {bad[0][1]}", hint="fix those fields and validate again")
    for path, problems in bad:
        click.echo(f"invalid: {path}: {problems}")
    if bad:
        raise ProfileError(f"{len(bad)} of {len(files)} profile file(s) invalid: {', '.join(p for p, _ in bad)}",
                           hint="fix the fields listed above and validate again")


@profiles.command("probe")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the host profile to this .yaml file (atomically) instead of stdout.")
def probe_cmd(output: str | None) -> None:
    """Probe this machine (CPU flags, cores, memory, GPU, installed runtimes) into a profile."""
    if output and not output.lower().endswith((".yaml", ".yml")):
        raise ConfigError(f"output '{output}' must end in .yaml or .yml", hint="e.g. -o host.yaml")
    from edgeprune.targets import probe
    from edgeprune._io import write_text_atomic

    text = probe.probe_host().to_yaml()
    if output:
        try:
            write_text_atomic(output, text)
        except OSError as err:
            raise ConfigError(f"cannot write {output}: {err.strerror or err}",
                              hint="check that the directory is writable and has free space") from err
        click.echo(f"wrote {output}")
    else:
        click.echo(text.rstrip())


COMMANDS = [profiles]
