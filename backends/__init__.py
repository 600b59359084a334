"""Runtime backends, installed as `edgeprune.backends`: one module per runtime, and the registry.

Each backend class declares its capabilities as data (`Backend.capabilities`: precisions and the ISA/compute
capability they need, patterns, kernel proof, export format, quantizers). Everything else in edgeprune asks this
registry, so a new runtime is one backend module plus its profile data, registered with `register_backend`.
Runtime packages are imported inside methods only: importing a backend module costs numpy, not the runtime.

May import: edgeprune core modules and edgeprune.measurement.timing. Never imports targets, transforms,
optimizer, report, deploy or cli.
"""
from __future__ import annotations

import functools
import importlib
from pathlib import Path

from edgeprune.backends.base import Backend, BackendOptions, Capabilities, HostFacts, HostView, LayerInfo, TensorSpec, dense_rule
from edgeprune.errors import ConfigError

# the built-in backends: name -> (module, class), imported on first use
_BUILTIN = {
    "onnxruntime": ("edgeprune.backends.ort", "OnnxRuntimeBackend"),
    "openvino": ("edgeprune.backends.ov", "OpenVINOBackend"),
    "tensorrt": ("edgeprune.backends.trt", "TensorRTBackend"),
    "torch": ("edgeprune.backends.pt", "TorchBackend"),
}
_REGISTERED: dict[str, type[Backend]] = {}
# Runtimes a device profile may name that edgeprune has no backend for: vocabulary for profiles only
# (name -> aliases). A profile can say a device runs them; nothing here can build or time for them.
OTHER_RUNTIMES = {"tflite": ("litert",), "executorch": (), "rknn": (), "hailort": (), "edgetpu": (), "qnn": (),
                  "coreml": (), "vela": ()}
# The runtime used when none is named: it runs on every host, and it is the reference that validates exports.
DEFAULT = "onnxruntime"


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Add (or replace) a backend class; usable as a class decorator. Its name and aliases become valid everywhere."""
    if not isinstance(getattr(cls, "capabilities", None), Capabilities):
        raise ConfigError(f"backend {cls.__name__} declares no Capabilities", hint="set capabilities = Capabilities(...)")
    _REGISTERED[cls.name] = cls
    return cls


def unregister_backend(name: str) -> None:
    _REGISTERED.pop(name, None)


def names() -> list[str]:
    return list(dict.fromkeys([*_BUILTIN, *_REGISTERED]))


def backend_classes() -> list[type[Backend]]:
    return [get_backend_class(n) for n in names()]


def aliases() -> dict[str, str]:
    """Every accepted spelling -> canonical name, for backends and the profile-only runtimes alike (one table)."""
    table = {alias: name for name, extra in OTHER_RUNTIMES.items() for alias in (name, *extra)}
    for cls in backend_classes():
        table.update({alias: cls.name for alias in (cls.name, *cls.aliases)})
    return table


def canonical(name: str) -> str:
    key = str(name).strip().lower()
    return aliases().get(key, key)


def runtime_vocabulary() -> tuple[str, ...]:
    """Runtime names a device profile may use: the backends, then the profile-only ones."""
    return (*names(), *OTHER_RUNTIMES)


def get_backend_class(name: str) -> type[Backend]:
    key = str(name).strip().lower()
    key = key if key in _REGISTERED or key in _BUILTIN else canonical(key)
    if key in _REGISTERED:
        return _REGISTERED[key]
    if key not in _BUILTIN:
        raise ConfigError(f"unknown backend '{name}'", hint=f"use one of {', '.join(names())}")
    module, cls = _BUILTIN[key]
    return getattr(importlib.import_module(module), cls)


def get_backend(name: str, options: BackendOptions | None = None) -> Backend:
    return get_backend_class(name)(options)


def capabilities(name: str) -> Capabilities:
    return get_backend_class(name).capabilities


def measurable_here() -> list[str]:
    """Backends a CPU host can time (optimize measures its plans on them here)."""
    return [cls.name for cls in backend_classes() if cls.capabilities.times_on_cpu]


def by_suffix(suffix: str) -> type[Backend] | None:
    """The backend whose own artifact ends in `suffix` (.xml -> the IR runtime), or None."""
    return next((cls for cls in backend_classes() if cls.capabilities.artifact_suffix == suffix), None)


@functools.lru_cache(maxsize=1)
def host_facts() -> HostFacts:
    """This machine's HostFacts (probed once per process)."""
    import importlib.util

    import torch

    flags, cpu = set(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cap = torch.cuda.get_device_capability(0) if cuda else None
    installed = frozenset(c.name for c in backend_classes() if importlib.util.find_spec(c.package) is not None)
    return HostFacts("amx_tile" in flags, cuda, cap, installed, cpu)


def availability() -> dict[str, str | None]:
    """backend name -> None when usable here, else the reason it is not."""
    return {n: get_backend_class(n).why_unavailable() for n in names()}


__all__ = ["Backend", "BackendOptions", "Capabilities", "HostView", "dense_rule", "LayerInfo", "TensorSpec", "DEFAULT", "OTHER_RUNTIMES",
           "register_backend", "unregister_backend", "get_backend", "get_backend_class", "backend_classes", "names",
           "aliases", "canonical", "runtime_vocabulary", "capabilities", "measurable_here", "by_suffix", "availability", "host_facts", "HostFacts"]
