"""CLI commands that load, export and benchmark models (filled in by the export/bench work)."""
from __future__ import annotations

COMMANDS: list = []
