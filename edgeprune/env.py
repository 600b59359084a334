"""The environment a measurement was taken in: CPU, cores, memory, library versions, date.

Versions come from package metadata so that describing the environment imports no runtime.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
from functools import lru_cache
from importlib import metadata

# the libraries every measurement depends on; each registered runtime is added by name (library_versions)
CORE_LIBRARIES = ("edgeprune", "torch", "onnx", "onnxscript", "transformers", "numpy")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions(names: tuple[str, ...] | None = None) -> dict[str, str | None]:
    """Package versions from metadata (no import); by default the core libraries and, under each registered
    runtime's name, the version of the first of its distributions installed (onnxruntime-gpu counts as onnxruntime)."""
    if names is not None:
        return {name: _version(name) for name in names}
    from edgeprune.backends import backend_classes

    out = {name: _version(name) for name in CORE_LIBRARIES}
    for cls in backend_classes():
        found = (v for v in map(_version, cls.capabilities.dists or (cls.package,)) if v)
        out[cls.name] = next(found, None)
    return out


@lru_cache(maxsize=1)
def _static_info() -> dict:
    import psutil

    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "versions": library_versions(),
    }


def environment() -> dict:
    """Machine facts plus the UTC date; safe to call often (static part cached)."""
    info = dict(_static_info())
    info["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return info
