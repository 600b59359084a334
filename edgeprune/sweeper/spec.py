"""SWEEP.yaml: models x targets x budgets x precisions, validated like the device profiles (pydantic, every
problem on its own line), and expanded into configs, each keyed by a hash of everything that decides its result.

    models:
      - {name: cnn, model: "m.py:cnn", input_shape: ["1x3x32x32"]}
    targets:
      - {name: host-ort, profile: host, runtime: onnxruntime}      # timed on this machine
      - {name: orin, profile: jetson-orin-nano, runtime: tensorrt, resource: "target:orin"}  # a Ray node's resource
      - {name: pi, profile: rpi5, runtime: onnxruntime, ssh: "pi@10.0.0.7"}  # the bundle runner over ssh
    budgets: {speedup: [1.3, 1.5]}
    precisions: [fp32]

Paths in the file (model files, data) are relative to the file's folder.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeprune.errors import ConfigError

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
PRECISIONS = ("auto", "fp32", "int8", "fp16")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEntry(_Strict):
    name: str = Field(pattern=_NAME)
    model: str = Field(min_length=1)  # a model spec: file.py:factory, module:factory, HF folder, .pt2, "minilm"
    input_shape: list[str] | None = None
    calib: str | None = None
    train: str | None = None
    eval: str | None = None
    metric: str | None = None
    max_drop: float | None = Field(default=None, ge=0)
    recover: Literal["auto", "off", "bn", "distill"] = "auto"
    recover_minutes: float | None = Field(default=None, gt=0)


class TargetEntry(_Strict):
    name: str = Field(pattern=_NAME)
    profile: str = "host"
    runtime: str | None = None
    resource: str | None = Field(default=None, min_length=1)  # the Ray custom resource of the node that holds it
    ssh: str | None = None  # user@host[:port] running the bundle runner
    python: str = "python3"  # the ssh host's interpreter
    identity: str | None = None  # the ssh key (else the user's ssh config and agent decide)

    @model_validator(mode="after")
    def _one_place(self):
        if self.resource and self.ssh:
            raise ValueError("give either resource (a Ray node) or ssh (a device the bundle runner reaches), not both")
        return self

    @property
    def resource_name(self) -> str:
        """The Ray custom resource that timing on this target holds (capacity 1 on the node that holds the target)."""
        return self.resource or f"target:{self.name}"


class Budgets(_Strict):
    speedup: list[float] = Field(default_factory=list)
    latency_ms: list[float] = Field(default_factory=list)

    @field_validator("speedup", "latency_ms")
    @classmethod
    def _bounded(cls, v: list[float], info) -> list[float]:
        # a speedup must be above 1, a latency above 0 ms; NaN is neither
        floor, what = (1.0, "speedup") if info.field_name == "speedup" else (0.0, "latency")
        bad = [x for x in v if not x > floor]
        if bad:
            raise ValueError(f"each {what} must be above {floor:g}{' ms' if what == 'latency' else ''} (got {bad[0]})")
        return v

    @model_validator(mode="after")
    def _some(self):
        if not self.speedup and not self.latency_ms:
            raise ValueError("list at least one budget: speedup: [1.5] or latency_ms: [10]")
        return self

    def items(self) -> list[tuple[str, float]]:
        return [("speedup", float(s)) for s in self.speedup] + [("latency_ms", float(x)) for x in self.latency_ms]


class SweepSpec(_Strict):
    models: list[ModelEntry] = Field(min_length=1)
    targets: list[TargetEntry] = Field(min_length=1)
    budgets: Budgets
    precisions: list[Literal["auto", "fp32", "int8", "fp16"]] = Field(default_factory=lambda: ["fp32"], min_length=1)
    rounds: int | None = Field(default=None, ge=3)  # interleaved timing rounds per measurement (optimize's default)
    iters: int | None = Field(default=None, ge=10)
    seed: int = 0

    @model_validator(mode="after")
    def _unique(self):
        for field in ("models", "targets"):
            names = [x.name for x in getattr(self, field)]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{field}: name '{twice[0]}' is used twice; names must be unique")
        return self


def load_sweep(path: str | Path) -> tuple[SweepSpec, Path]:
    """(spec, the file's folder). Bad YAML or a bad field: one ConfigError, each problem on its own line."""
    from edgeprune.targets.validate import validation_problems

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}", hint="pass a SWEEP.yaml (see `edgeprune sweep --help`)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}", hint="fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level is a {type(data).__name__}, expected models/targets/budgets",
                          hint="start the file with 'models:' (see `edgeprune sweep --help`)")
    try:
        return SweepSpec.model_validate(data), path.resolve().parent
    except ValidationError as err:
        problems = [f"field '{loc}': {msg}" if loc else msg for loc, msg in validation_problems(err)]
        # one problem: one line; more: one line each under a header (what the CLI prints after "error: ")
        text = problems[0] if len(problems) == 1 else f"{len(problems)} problem(s):\n" + "\n".join(
            f"  {path}: {p}" for p in problems)
        raise ConfigError(f"{path}: {text}",
                          hint="correct the field(s) named; edgeprune/sweeper/spec.py lists every field") from None


def _file_digest(text: str | None, base: Path) -> str | None:
    """sha256 of the file a spec or data path names (its file part before ':'), so an edit re-runs the config."""
    if not text:
        return None
    candidate = base / re.split(r":(?![\\/])", text)[0]
    if candidate.is_file():
        return hashlib.sha256(candidate.read_bytes()).hexdigest()
    return None


def resolve(text: str | None, base: Path) -> str | None:
    """A path in the sweep file, made absolute against the file's folder (a bare module spec stays as it is)."""
    if not text:
        return text
    head, sep, tail = text.partition(":") if re.match(r"^[^:]+\.py:", text) else (text, "", "")
    candidate = base / head
    return (str(candidate.resolve()) + sep + tail) if candidate.exists() else text


def config_key(model: ModelEntry, target: TargetEntry, budget: tuple[str, float], precision: str, spec: SweepSpec,
               base: Path) -> str:
    """16 hex digits of sha256 over what decides the result: the entries, the files they name, the options."""
    from importlib.metadata import version

    parts: dict[str, Any] = {
        "model": model.model_dump(), "target": target.model_dump(), "budget": list(budget), "precision": precision,
        "rounds": spec.rounds, "iters": spec.iters, "seed": spec.seed, "edgeprune": version("edgeprune"),
        "files": {k: _file_digest(getattr(model, k), base) for k in ("model", "calib", "train", "eval")},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
