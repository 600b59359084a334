"""One quantization request, as every runtime's quantizer takes it.

A backend names its quantizers in `Capabilities.quantizers` (precision -> "module:function"); each such function
takes a QuantJob and returns the details dict that QuantizeResult carries. `config=None` means that quantizer's
own defaults.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable, Iterable

from edgeprune.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class QuantJob:
    onnx_path: Path  # the FP32 ONNX
    output: Path  # the artifact to write (the backend's quantized_suffix)
    calib: Any = None  # CalibrationData bound to the ONNX inputs, or None (dynamic / weight-only)
    config: Any = None
    evaluate: Callable[[Any, Iterable[Any]], float] | None = None  # accuracy-controlled PTQ, where offered
    eval_data: Iterable[Any] | None = None


def check_float_ends(value: float) -> None:
    """OrtQuantConfig/OvQuantConfig.float_ends: a fraction of the weighted layers, in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"float_ends {value} is not a fraction in [0, 1)", hint="e.g. 0.125")


def input_end(weighted: list[str], fraction: float) -> list[str]:
    """The layers an input-end-float INT8 variant keeps float: of the weighted layers in execution order, the first
    ceil(fraction * n) and the last one (the classifier). Each runtime lists its own layer names."""
    import math

    first = weighted[:math.ceil(fraction * len(weighted))]
    return first + [n for n in weighted[-1:] if n not in first]


def quantizer(backend_cls, precision: str) -> Callable[[QuantJob], dict[str, Any]]:
    """The function the backend declares for `precision`, or a ConfigError naming what it offers."""
    offered = backend_cls.capabilities.quantizers
    if precision not in offered:
        raise ConfigError(f"backend '{backend_cls.name}' offers no {precision} artifact",
                          hint=f"use --precision {' or '.join(offered) or '(none: it has no quantizer)'}")
    module, _, name = offered[precision].partition(":")
    return getattr(importlib.import_module(module), name)
