"""`edgeprune prune` (structured pruning) CLI commands."""
from __future__ import annotations

COMMANDS: list = []
