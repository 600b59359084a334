"""edgeprune: make trained PyTorch models fast on the hardware they will run on.

Public API (imported lazily so `import edgeprune` pulls in no runtime):
    ep.load_profile(name)            device profiles (hw_profiles/*.yaml, "host" = probed)
    ep.target(name, runtime=)        a Target: that profile + the runtime it runs there + its capabilities
    ep.load_model(spec)              model specs: module:factory, file.py:factory, HF folder, .pt2, .onnx
    ep.export(model, inputs, path)   validated ONNX export (and OpenVINO IR)
    ep.benchmark(model_or_path, backend=...)  latency statistics on a real runtime
    ep.optimize(model, inputs, OptimizeConfig(...), calib=..., train=..., evaluate=...)  the whole job
    ep.sweep("sweep.yaml", "DIR")  models x targets x budgets on Ray, results.jsonl + report.html
"""
from __future__ import annotations

import importlib

from edgeprune.errors import (
    BackendUnavailable,
    BenchmarkError,
    ConfigError,
    EdgepruneError,
    ExportError,
    ModelLoadError,
    ProfileError,
    PruningError,
    SparsityError,
)

__version__ = "0.1.0"

# public name -> module that defines it; resolved on first attribute access
_LAZY = {
    "load_profile": "edgeprune.targets.profiles",
    "target": "edgeprune.targets.target",
    "Target": "edgeprune.targets.target",
    "list_profiles": "edgeprune.targets.profiles",
    "DeviceProfile": "edgeprune.targets.profiles",
    "probe_host": "edgeprune.targets.probe",
    "load_model": "edgeprune.models",
    "parse_input_specs": "edgeprune.models",
    "LoadedModel": "edgeprune.models",
    "export": "edgeprune.exporter",
    "convert": "edgeprune.exporter",
    "ExportReport": "edgeprune.exporter",
    "benchmark": "edgeprune.measurement.bench",
    "compare": "edgeprune.measurement.bench",
    "measure": "edgeprune.measurement.bench",
    "BenchResult": "edgeprune.measurement.bench",
    "prune": "edgeprune.pruning",
    "StructuredConfig": "edgeprune.pruning",
    "count": "edgeprune.measurement.counting",
    "sparsify": "edgeprune.sparsity",
    "SparsityConfig": "edgeprune.sparsity",
    "sparsify_attention": "edgeprune.attention",
    "AttentionSparsityConfig": "edgeprune.attention",
    "get_backend": "edgeprune.backends",
    "optimize": "edgeprune.optimizer",
    "OptimizeConfig": "edgeprune.optimizer",
    "OptimizeResult": "edgeprune.optimizer",
    "CalibrationData": "edgeprune.data",
    "BackendOptions": "edgeprune.backends",
    "sweep": "edgeprune.sweeper",
    "SweepSpec": "edgeprune.sweeper",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeprune' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = [
    "EdgepruneError",
    "ConfigError",
    "ProfileError",
    "ModelLoadError",
    "ExportError",
    "BackendUnavailable",
    "BenchmarkError",
    "PruningError",
    "SparsityError",
    *_LAZY,
]
