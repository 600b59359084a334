"""One error hierarchy for every user-facing failure.

Each error carries one line that says what is wrong, where (file, field, layer) and how to fix it.
The CLI prints `str(err)` and exits 2; tracebacks only with --debug.
"""
from __future__ import annotations


class EdgepruneError(Exception):
    """Base of every error edgeprune raises on bad input or an unusable environment."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.hint})" if self.hint else self.message


class ConfigError(EdgepruneError):
    """A configuration value (CLI option, config dataclass field, input spec) is invalid."""


class NotApplicable(ConfigError):
    """A variant that does not apply to this model (e.g. an ORT quantization candidate for CNNs, given a
    transformer): `optimize --precision auto` declines it with this reason instead of failing."""


class ProfileError(EdgepruneError):
    """A device profile is missing or does not validate."""


class ModelLoadError(EdgepruneError):
    """A model spec cannot be resolved or loaded."""


class ExportError(EdgepruneError):
    """Export failed, or the exported model disagrees with the source model."""


class BackendUnavailable(EdgepruneError):
    """The runtime a backend needs is not installed or cannot run here."""


class BenchmarkError(EdgepruneError):
    """A benchmark could not run or produced unusable timings."""


class PruningError(EdgepruneError):
    """A model or layer cannot be pruned as configured."""


class SparsityError(EdgepruneError):
    """A sparsity pattern or configuration is invalid for a weight."""


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
]
