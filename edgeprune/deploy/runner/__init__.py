"""The standalone on-device runner shipped inside every bundle (edgeprune_run.py).

It is a template file, not a module edgeprune imports by name: it must run on a target that has only
numpy and one runtime, so `edgeprune.deploy.bundle.load_runner()` loads it by path to share its code.
"""
from __future__ import annotations

from pathlib import Path

RUNNER_PATH = Path(__file__).with_name("edgeprune_run.py")
