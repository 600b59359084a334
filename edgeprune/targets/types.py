"""Vocabulary of device profiles: known runtimes, precisions, units, and the constrained field types.

Kept apart from the models (edgeprune.targets.schema) so that other modules can check a runtime or
precision name without pulling in the whole schema.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from edgeprune import backends, precisions

PRECISIONS = precisions.names()  # the precision registry (edgeprune.precisions): one table for the project
KINDS = ("cpu", "gpu", "npu")
DEVICES = ("cpu", "gpu", "npu", "dla")
CONFIDENCES = ("V", "M", "D", "unconfirmed")
VERDICTS = ("yes", "memory-only", "no")
PATTERN_KINDS = ("channel", "nm", "block", "unstructured")

COMPUTE_UNITS = {"TOPS": 1e12, "TFLOPS": 1e12, "GOPS": 1e9, "GFLOPS": 1e9, "POPS": 1e15, "PFLOPS": 1e15}
BANDWIDTH_UNITS = {"GB/s": 1e9, "TB/s": 1e12, "MB/s": 1e6, "GiB/s": 2.0**30}
SIZE_UNITS = {"GB": 1e9, "GiB": 2.0**30, "TB": 1e12, "MB": 1e6, "MiB": 2.0**20}

_VERSION = re.compile(r"^\d+(\.\d+){0,4}(\.?(a|b|rc|post|dev)\d*)*$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def canonical_runtime(name: str) -> str:
    """One alias table for the whole project: the backend registry's (edgeprune.backends.aliases)."""
    return backends.canonical(name)


def runtimes() -> tuple[str, ...]:
    """Runtime names a profile may use, asked of the registry at validation time (a registered backend counts)."""
    return backends.runtime_vocabulary()


def _runtime(value: Any) -> Any:
    return canonical_runtime(value) if isinstance(value, str) else value


def _check_runtime(value: str) -> str:
    if value not in runtimes():
        raise PydanticCustomError("runtime", "'{v}' is not a known runtime: use one of {known}",
                                  {"v": value, "known": ", ".join(runtimes())})
    return value


def canonical_precision(name: str) -> str:
    return precisions.canonical(name)


def _version(value: Any) -> Any:
    # YAML reads an unquoted 10.10 as the float 10.1: refuse numbers rather than guess the version
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise PydanticCustomError("version_number", "write the version as a quoted string, e.g. \"{v}\" (YAML turns "
                                  "unquoted 10.10 into the number 10.1)", {"v": value})
    return value


def _check_version(value: str) -> str:
    if not _VERSION.match(value):
        raise PydanticCustomError("version", "'{v}' is not a version string like '10.3', '2024.4' or '1.17.0'",
                                  {"v": value})
    return value


def _verdict(value: Any) -> Any:
    # YAML 1.1 reads unquoted yes/no/true/false as booleans
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return value


def check_profile_name(value: str) -> str:
    if not _NAME.match(value):
        raise PydanticCustomError("profile_name", "'{v}' is not a profile name: use lower-case letters, digits, '.', '_' "
                                  "and '-' (e.g. 'jetson-agx-orin')", {"v": value})
    return value


Text = Annotated[str, Field(strict=True, min_length=1, max_length=4000)]
Token = Annotated[str, Field(strict=True, pattern=r"^[a-z0-9][a-z0-9_.:+-]*$", max_length=64)]
PosInt = Annotated[int, Field(strict=True, gt=0)]
Fraction = Annotated[float, Field(strict=True, ge=0, lt=1, allow_inf_nan=False)]
Version = Annotated[str, BeforeValidator(_version), Field(strict=True), AfterValidator(_check_version)]
Verdict = Annotated[Literal[VERDICTS], BeforeValidator(_verdict)]
Confidence = Literal[CONFIDENCES]
RuntimeName = Annotated[str, BeforeValidator(_runtime), Field(strict=True), AfterValidator(_check_runtime)]
Precision = Literal[PRECISIONS]
DeviceName = Literal[DEVICES]
FigureKey = Annotated[str, Field(strict=True, pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
