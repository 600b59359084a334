"""Open a runtime session on anything the user can name: module, LoadedModel, model spec or artifact path.

Torch modules headed for ONNX Runtime, OpenVINO or TensorRT are exported (and validated) to a temp
folder that lives as long as the session.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from edgeprune.backends import DEFAULT, BackendOptions, get_backend
from edgeprune.errors import ConfigError
from edgeprune.models import LoadedModel, load_model

if TYPE_CHECKING:  # a type only: backends never import targets (targets imports backends)
    from edgeprune.targets.schema import DeviceProfile

ARTIFACT_SUFFIXES = (".onnx", ".xml", ".engine", ".plan")


def _as_loaded(model: Any, input_shapes: Sequence[str] | None, batch: int) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], torch.nn.Module):
        module, example = model
        example = (example,) if isinstance(example, torch.Tensor) else tuple(example)
        return LoadedModel(type(module).__name__, "module", module.eval(), example, [f"input_{i}" for i in range(len(example))])
    if isinstance(model, torch.nn.Module):
        raise ConfigError("a bare nn.Module needs example inputs", hint="pass (model, example_inputs) or a LoadedModel")
    return load_model(model, input_shapes, batch=batch)


def open_session(model: Any, backend: str = DEFAULT, *, threads: int | None = None, batch: int = 1,
                 options: BackendOptions | None = None, input_shapes: Sequence[str] | None = None,
                 profile: DeviceProfile | None = None) -> tuple[str, Any]:
    """Return (label, compiled backend) for `model` on `backend`."""
    if options is None:
        options = BackendOptions(threads=threads)
    elif threads is not None:
        import dataclasses

        options = dataclasses.replace(options, threads=threads)
    session = get_backend(backend, options)
    session.require()
    path = Path(str(model)) if isinstance(model, (str, Path)) else None
    if path is not None and path.suffix in ARTIFACT_SUFFIXES:
        if session.name == "torch":
            raise ConfigError(f"the torch backend cannot run {path.name}", hint=f"use a runtime that loads it, e.g. --backend {DEFAULT}")
        if not path.is_file():
            from edgeprune.errors import ModelLoadError

            raise ModelLoadError(f"model file not found: {path}", hint="check the path")
        return path.stem, session.compile(path, profile)
    loaded = _as_loaded(model, input_shapes, batch)
    if session.name == "torch":
        return loaded.name, session.compile(loaded, profile)
    if loaded.onnx_path is not None:
        return loaded.name, session.compile(loaded.onnx_path, profile)
    from edgeprune.exporter import export

    tmp = tempfile.TemporaryDirectory(prefix="edgeprune-")
    onnx_path = Path(tmp.name) / f"{loaded.name}.onnx"
    export(loaded, None, onnx_path)
    session.compile(onnx_path, profile)
    session._tmpdir = tmp  # keep the exported file alive as long as the session
    return loaded.name, session
