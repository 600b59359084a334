"""The environment a measurement was taken in: CPU, cores, memory, library versions, date.

Versions come from package metadata so that describing the environment imports no runtime.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
from functools import lru_cache
from importlib import metadata

LIBRARIES = ("edgeprune", "torch", "onnx", "onnxscript", "onnxruntime", "openvino", "tensorrt", "transformers", "numpy")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions(names=LIBRARIES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
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
