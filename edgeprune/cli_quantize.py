"""CLI commands (filled in by the cli_quantize work)."""
from __future__ import annotations

COMMANDS: list = []
