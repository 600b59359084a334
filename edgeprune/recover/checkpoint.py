"""The resumable recovery checkpoint: one file, written atomically, read with weights_only=True (no pickle)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgeprune._io import atomic_path
from edgeprune.errors import ConfigError

NAME = "recover.pt"


def save(directory: Path, state: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / NAME) as tmp:
        torch.save(state, tmp)
    return directory / NAME


def peek(directory: Path, fingerprint: str) -> dict[str, Any] | None:
    """load(), or None when nothing was saved yet (a foreign or damaged file is still an error)."""
    return load(directory, fingerprint) if (Path(directory) / NAME).is_file() else None


def load(directory: Path, fingerprint: str) -> dict[str, Any]:
    """The checkpoint in `directory`, refused when it was made for another model, plan or recovery setting."""
    path = Path(directory) / NAME
    if not path.is_file():
        raise ConfigError(f"no recovery checkpoint at {path}", hint="resume the OUTDIR of an interrupted run, or run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: one line, not a traceback
        raise ConfigError(f"cannot read the recovery checkpoint {path}: {type(err).__name__}",
                          hint="delete it and run without --resume") from None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        raise ConfigError(f"the recovery checkpoint {path} is for another model, plan or recovery setting",
                          hint="resume with the same model, data and options, or delete it")
    return state
