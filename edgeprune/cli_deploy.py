"""CLI commands (filled in by the cli_deploy work)."""
from __future__ import annotations

COMMANDS: list = []
