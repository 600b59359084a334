"""`edgeprune profiles ...` commands (placeholder until the profiles work lands)."""
from __future__ import annotations

import click


@click.group()
def profiles() -> None:
    """Device profiles: list, show, validate, probe."""


COMMANDS = [profiles]
