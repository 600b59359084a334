"""The precision registry: every numeric format a profile, plan or artifact may name, with the facts the code asks.

One table instead of per-module lists and `{"fp32": 4, "fp16": 2, ...}.get(p, 4)` fall-backs: an unknown name is a
ConfigError listing the known ones, never a silent 4 bytes. Imports nothing from edgeprune but errors (a core module:
targets, backends and the transforms all read it).
"""
from __future__ import annotations

import dataclasses

from edgeprune.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Precision:
    name: str  # canonical spelling, as profiles and plans write it
    bits: int  # storage bits per element
    kind: str  # "float" | "int"
    aliases: tuple[str, ...] = ()  # other spellings accepted (numpy / ONNX / framework names)
    sparse_tensor_cores: bool = False  # NVIDIA 2:4 sparse tensor cores run it (fp16, bf16, int8, fp8: docs/HARDWARE.md §2)

    @property
    def bytes(self) -> float:
        return self.bits / 8


_REGISTRY: dict[str, Precision] = {}


def register_precision(p: Precision) -> Precision:
    """Add (or replace) a precision; its name and aliases become valid everywhere the registry is asked."""
    _REGISTRY[p.name] = p
    return p


for _p in (
    Precision("fp32", 32, "float", ("float32", "float", "f32")),
    Precision("tf32", 32, "float"),  # stored as fp32; tensor cores compute with a 10-bit mantissa
    Precision("bf16", 16, "float", ("bfloat16",), sparse_tensor_cores=True),
    Precision("fp16", 16, "float", ("float16", "half", "f16"), sparse_tensor_cores=True),
    Precision("fp8", 8, "float", ("float8", "e4m3", "e5m2"), sparse_tensor_cores=True),
    Precision("fp4", 4, "float", ("nvfp4", "mxfp4")),
    Precision("int16", 16, "int", ("i16",)),
    Precision("int8", 8, "int", ("uint8", "u8", "i8", "qint8", "quint8"), sparse_tensor_cores=True),
    Precision("int4", 4, "int", ("i4", "uint4")),
):
    register_precision(_p)


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def aliases() -> dict[str, str]:
    """Every accepted spelling -> canonical name."""
    return {alias: p.name for p in _REGISTRY.values() for alias in (p.name, *p.aliases)}


def canonical(name: str) -> str:
    """The canonical spelling of `name` (lower-cased); an unknown name is returned as given, for validators to refuse."""
    key = str(name).strip().lower()
    return aliases().get(key, key)


def get(name: str) -> Precision:
    """The registered precision `name` (any alias); an unknown one is a ConfigError listing the known ones."""
    key = canonical(name)
    if key not in _REGISTRY:
        raise ConfigError(f"unknown precision '{name}'", hint=f"use one of {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def bytes_per_element(name: str) -> float:
    return get(name).bytes
