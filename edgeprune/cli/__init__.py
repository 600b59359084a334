"""The command line: one module per command group, all built on edgeprune's Python API.

The top layer: may import anything in edgeprune; nothing in edgeprune imports it.
"""
from edgeprune.cli.main import main

__all__ = ["main"]
