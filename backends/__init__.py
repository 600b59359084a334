"""Runtime backends, installed as `edgeprune.backends`. Runtimes are imported lazily."""
from __future__ import annotations

import importlib

from edgeprune.backends.base import Backend, BackendOptions, LayerInfo, TensorSpec
from edgeprune.errors import ConfigError

# name -> (module, class); modules import their runtime only when used
_REGISTRY = {
    "onnxruntime": ("edgeprune.backends.ort", "OnnxRuntimeBackend"),
    "openvino": ("edgeprune.backends.ov", "OpenVINOBackend"),
    "torch": ("edgeprune.backends.pt", "TorchBackend"),
    "tensorrt": ("edgeprune.backends.trt", "TensorRTBackend"),
}
ALIASES = {"ort": "onnxruntime", "ov": "openvino", "pytorch": "torch", "trt": "tensorrt"}


def names() -> list[str]:
    return list(_REGISTRY)


def get_backend_class(name: str) -> type[Backend]:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in _REGISTRY:
        raise ConfigError(f"unknown backend '{name}'", hint=f"use one of {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[key]
    return getattr(importlib.import_module(module), cls)


def get_backend(name: str, options: BackendOptions | None = None) -> Backend:
    return get_backend_class(name)(options)


def availability() -> dict[str, str | None]:
    """backend name -> None when usable here, else the reason it is not."""
    return {n: get_backend_class(n).why_unavailable() for n in _REGISTRY}


__all__ = ["Backend", "BackendOptions", "LayerInfo", "TensorSpec", "get_backend", "get_backend_class", "names", "availability"]
