"""`Target`: one device profile, the runtime the model will run on there, and that runtime's capabilities.

Built once, by `edgeprune.target(name, runtime=)` or `Target.host()`, and passed wherever a profile and a
runtime name travelled separately before: the planner, the latency model, pruning's width alignment, attention
and the quantizer read the same object, so a width rounded for one runtime is never timed on another.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Union

from edgeprune import backends
from edgeprune.backends.base import Capabilities
from edgeprune.errors import ConfigError
from edgeprune.targets.profiles import load_profile
from edgeprune.targets.schema import DeviceProfile


@dataclasses.dataclass(frozen=True)
class Target:
    """profile + runtime (a registered backend's canonical name) + that backend's capabilities."""

    profile: DeviceProfile
    runtime: str

    def __post_init__(self):
        object.__setattr__(self, "runtime", backends.canonical(self.runtime))
        if self.runtime not in backends.names():
            raise ConfigError(f"runtime '{self.runtime}' has no backend here, so nothing can build or time for it",
                              hint=f"use one of {', '.join(backends.names())}")

    @classmethod
    def host(cls, runtime: str | None = None) -> "Target":
        """This machine (the probed "host" profile) on `runtime`, by default the runtime it prefers and can time."""
        return target("host", runtime=runtime)

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def on_host(self) -> bool:
        """The profile describes this machine, so its plans can be measured here rather than estimated."""
        return self.profile.name == "host"

    @property
    def capabilities(self) -> Capabilities:
        return backends.capabilities(self.runtime)

    @property
    def measurable(self) -> bool:
        """Plans can be timed on the real runtime here: the host, on a runtime this CPU host times."""
        return self.on_host and self.runtime in backends.measurable_here()

    def channel_multiple(self, precision: str = "fp32") -> int:
        """Width multiple dense kernels of this runtime want on this device (1: no rounding)."""
        return max(1, int(self.profile.channel_multiple(self.runtime, precision)))

    def accelerates(self, pattern: str) -> tuple[str, str]:
        """("yes" | "memory-only" | "no", reason) for a sparsity pattern on this runtime and device."""
        return self.profile.accelerates(self.runtime, pattern)

    def describe(self) -> str:
        return f"{self.runtime} on {self.name}"


TargetLike = Union[Target, DeviceProfile, str, "os.PathLike[str]"]


def target(profile: TargetLike = "host", runtime: str | None = None) -> Target:
    """The Target for a profile (name, YAML path, DeviceProfile or Target) and runtime.

    No runtime: the first of the device's runtimes (in its preference order) that is installed here, else
    backends.DEFAULT; on the host, DEFAULT unless that runtime is one this machine times. A Target given with a
    runtime is re-aimed at it."""
    if isinstance(profile, Target):
        return profile if runtime is None else Target(profile.profile, runtime)
    loaded = load_profile(profile)
    if runtime is not None:
        return Target(loaded, runtime)
    return Target(loaded, _default_runtime(loaded))


def _default_runtime(profile: DeviceProfile) -> str:
    installed = [name for name, why in backends.availability().items() if why is None]
    chosen = profile.preferred_runtime(installed)
    if profile.name == "host" and chosen not in backends.measurable_here():
        return backends.DEFAULT  # this host times only CPU runtimes: a GPU runtime's plan could not be measured here
    # a device whose runtimes are not installed here (a Jetson profile on a laptop) is planned for the default
    return chosen or backends.DEFAULT
