"""`sparsify(model, example_inputs, SparsityConfig(...), calib=...)`: zeros baked into the weights.

Calibrated methods (wanda, sparsegpt) run ONE forward pass over all calibration samples with a
pre-hook on every target layer: when the pass reaches a layer, the hook takes that layer's input
(which already flows through the sparsified prefix), prunes the weight in place and lets the
layer run with its new weights. That is the sequential layer-by-layer scheme of SparseGPT
without re-running the prefix per layer. No parametrization, mask buffer or hook is left behind.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Sequence

import torch
from torch import nn

from edgeprune.data import CalibrationData, as_data
from edgeprune.errors import ConfigError, SparsityError
from edgeprune.sparsity.calib import Moments, input_matrix, target_layers, unsupported_reason
from edgeprune.sparsity.patterns import NM, from_matrix, parse_pattern, to_matrix
from edgeprune.sparsity.result import LayerResult, SparsityReport
from edgeprune.sparsity.methods import DATA_FREE, SPARSITY_METHODS, sparsity_method
from edgeprune.sparsity.sparsegpt import reconstruction_error
from edgeprune.weights import is_hf_conv1d, linear_weight, set_linear_weight

METHODS = tuple(SPARSITY_METHODS)  # the registry's names (edgeprune.sparsity.methods)
ALLOCATIONS = ("uniform", "learned")


@dataclasses.dataclass(frozen=True)
class SparsityConfig:
    """What to sparsify and how. `pattern` accepts 'unstructured', '2:4', 'block4x4' or a SparsityPattern."""

    pattern: Any = "2:4"
    method: str = "magnitude"  # magnitude | wanda | sparsegpt
    sparsity: float | None = None  # N:M fixes it (2:4 -> 0.5); else default 0.5
    allocation: str = "uniform"  # uniform | learned (KDE thresholds, METHODS.md §5)
    ignore: tuple[str, ...] = ()  # fnmatch globs on module names, e.g. ("*.pooler.*", "classifier")
    layer_types: tuple[str, ...] = ("linear", "conv")
    on_incompatible: str = "skip"  # skip (listed in the report, with the reason) | error: a layer the pattern cannot tile
    blocksize: int = 128  # SparseGPT column block
    damp: float = 0.01  # SparseGPT λ = damp * mean(diag H)
    allocation_steps: int = 300
    allocation_lr: float = 0.01
    allocation_gamma: float = 100.0  # weight of the global-sparsity term
    allocation_samples: int = 16  # calibration samples used to learn the allocation
    max_layer_sparsity: float = 0.95
    seed: int = 1

    def __post_init__(self):
        pattern = parse_pattern(self.pattern)
        object.__setattr__(self, "pattern", pattern)
        object.__setattr__(self, "ignore", tuple(self.ignore))
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        sparsity_method(self.method)  # a ConfigError listing the registered methods
        if self.allocation not in ALLOCATIONS:
            raise ConfigError(f"unknown allocation '{self.allocation}'", hint="use uniform or learned")
        if self.on_incompatible not in ("error", "skip"):
            raise ConfigError(f"on_incompatible must be 'error' or 'skip', got '{self.on_incompatible}'")
        bad_types = set(self.layer_types) - {"linear", "conv"}
        if bad_types:
            raise ConfigError(f"unknown layer types {sorted(bad_types)}", hint="use linear and/or conv")
        if pattern.fixed_sparsity is None and self.sparsity is None:
            object.__setattr__(self, "sparsity", 0.5)
        pattern.target(self.sparsity)  # raises a SparsityError for 2:4 with sparsity=0.7, or 1.2
        if self.allocation == "learned" and isinstance(pattern, NM):
            raise ConfigError(f"learned allocation cannot change the sparsity of {pattern.name} (fixed at "
                              f"{pattern.fixed_sparsity:.0%} per layer)", hint="use allocation='uniform' or an unstructured/block pattern")
        if not 0.0 < self.damp < 10 or self.blocksize < 1 or self.allocation_steps < 1:
            raise ConfigError("damp must be in (0, 10), blocksize and allocation_steps >= 1")

    @property
    def target_sparsity(self) -> float:
        return self.pattern.target(self.sparsity)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pattern"] = self.pattern.name
        return d


# -- weights in matrix view (Linear, Conv2d, and HF GPT-2 style Conv1D whose weight is (in, out)) --


def weight_matrix(mod: nn.Module) -> torch.Tensor:
    """(out, K) pattern view; conv columns in (kernel pos, C_in) order so N:M groups run along C_in."""
    return to_matrix(linear_weight(mod))


def set_weight_matrix(mod: nn.Module, mat: torch.Tensor) -> None:
    set_linear_weight(mod, from_matrix(mat, tuple(linear_weight(mod).shape)))


def _layers(model: nn.Module, cfg: SparsityConfig) -> dict[str, nn.Module]:
    layers = target_layers(model, cfg.ignore, cfg.layer_types)
    if "linear" in cfg.layer_types:
        import fnmatch

        for name, mod in model.named_modules():
            if is_hf_conv1d(mod) and not any(fnmatch.fnmatchcase(name, p) for p in cfg.ignore):
                layers[name] = mod
    order = [n for n, _ in model.named_modules()]
    return {n: layers[n] for n in order if n in layers}


def _check_layers(layers: dict[str, nn.Module], cfg: SparsityConfig) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Split layers into (eligible, {name: reason skipped}); raise on incompatible ones unless told to skip."""
    ok, skipped = {}, {}
    for name, mod in layers.items():
        reason = unsupported_reason(mod)
        if reason is None:
            shape = tuple(weight_matrix(mod).shape) if is_hf_conv1d(mod) else tuple(mod.weight.shape)
            try:
                cfg.pattern.validate(shape, where=f"layer '{name}'")
            except SparsityError as err:
                reason = err.message
        if reason:
            skipped[name] = reason
        else:
            ok[name] = mod
    if skipped and cfg.on_incompatible == "error":
        first = next(iter(skipped.items()))
        names = ", ".join(f"'{n}'" for n in list(skipped)[:4]) + (" ..." if len(skipped) > 4 else "")
        raise SparsityError(f"{len(skipped)} layer(s) cannot take pattern {cfg.pattern.name}: {first[1]}",
                            hint=f"add them to ignore=[{names}] or set on_incompatible='skip' (CLI: drop --strict)")
    if not ok and skipped:
        first = next(iter(skipped.items()))
        raise SparsityError(f"no layer can take pattern {cfg.pattern.name}: all {len(skipped)} were skipped, e.g. {first[1]}",
                            hint="choose a pattern the layers tile (e.g. 2:4, block4x4)")
    if not ok:
        raise SparsityError(f"no layer to sparsify with pattern {cfg.pattern.name}",
                            hint="check ignore=[...] and layer_types; the model needs Linear or Conv2d layers")
    return ok, skipped


def _prune_layer(name: str, mod: nn.Module, cfg: SparsityConfig, sparsity: float | None,
                 moments: Moments | None) -> LayerResult:
    w = weight_matrix(mod).float()
    t0 = time.perf_counter()
    method = cfg.method if moments is not None else DATA_FREE
    new, keep = sparsity_method(method).prune(w, moments, cfg.pattern, sparsity, cfg)
    # relative output error on the calibration inputs, from H (SparseGPT only: Wanda keeps no Hessian)
    err = reconstruction_error(w, new, moments.hessian) if moments is not None and moments.h is not None else None
    set_weight_matrix(mod, new)
    check = cfg.pattern.check(weight_matrix(mod))
    return LayerResult(name=name, op=type(mod).__name__, weight_shape=tuple(mod.weight.shape), matrix_shape=tuple(w.shape),
                       pattern=cfg.pattern.name, method=method, target_sparsity=float(sparsity if sparsity is not None else cfg.target_sparsity),
                       sparsity=check.sparsity, pattern_ok=check.ok, recon_error=err, seconds=time.perf_counter() - t0,
                       dtype=str(mod.weight.dtype).replace("torch.", ""))


def sparsify(model, example_inputs: Sequence[torch.Tensor] | torch.Tensor | None = None, config: SparsityConfig | None = None,
             calib: Any = None, *, train: Any = None, inplace: bool = False, return_report: bool = False, progress=None):
    """Sparsify the Linear/Conv2d weights of `model` with `config`; returns the model (and the report).

    `calib`: calibration inputs for wanda/sparsegpt/learned allocation: anything edgeprune.data.as_data takes
    (tensor, tuple of tensors, dict, list/DataLoader of those, path, CalibrationData); without it the example
    inputs are used and the report says so. `train`: the samples the learned allocation trains on (default: calib).
    """
    from edgeprune.models import module_and_inputs

    cfg = config or SparsityConfig()
    model, example_inputs = module_and_inputs(model, example_inputs, "sparsify")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if train is not None and cfg.allocation != "learned":
        raise ConfigError("train= feeds the learned allocation only", hint="set allocation='learned', or drop train=")
    t0 = time.perf_counter()
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    all_layers = _layers(model, cfg)
    layers, skipped = _check_layers(all_layers, cfg)
    notes = []
    needs_data = sparsity_method(cfg.method).needs_data or (cfg.allocation == "learned" and train is None)
    data = _calibration(calib, example_inputs, cfg, notes) if needs_data else None
    sparsities: dict[str, float] = {n: cfg.target_sparsity for n in layers}
    allocation = None
    if cfg.allocation == "learned":
        from edgeprune.sparsity.allocation import learn_allocation

        learn_from = as_data(train) if train is not None else data
        batch = learn_from.head(cfg.allocation_samples).calls(device=device)[0]  # one (args, kwargs) batch
        allocation = learn_allocation(model, layers, batch, cfg, weight_fn=weight_matrix)
        sparsities = allocation.sparsities
    results: dict[str, LayerResult] = {}
    if not sparsity_method(cfg.method).needs_data:
        for name, mod in layers.items():
            results[name] = _prune_layer(name, mod, cfg, sparsities[name], None)
    else:
        _sequential(model, layers, cfg, sparsities, data.calls(device=device)[0], results, progress)
        missed = [n for n in layers if n not in results]
        for name in missed:  # never reached by the calibration forward (unused branch): data-free fallback
            results[name] = _prune_layer(name, layers[name], cfg, sparsities[name], None)
        if missed:
            notes.append(f"{len(missed)} layer(s) not reached by the calibration pass used magnitude: {', '.join(missed[:4])}")
    ordered = [results[n] for n in layers]
    skipped_rows = [LayerResult.skipped(n, all_layers[n], r) for n, r in skipped.items()]
    report = SparsityReport(config=cfg.to_dict(), layers=ordered + skipped_rows, seconds=time.perf_counter() - t0,
                            notes=notes, allocation=allocation.to_dict() if allocation else None,
                            calibration_samples=len(data) if data is not None else None)
    return (model, report) if return_report else model


def _calibration(calib: Any, example_inputs: tuple | None, cfg: SparsityConfig, notes: list[str]) -> CalibrationData:
    """All calibration samples (one forward pass sees them all); the example inputs, said in `notes`, without calib."""
    if calib is None:
        if example_inputs is None:
            raise ConfigError(f"method '{cfg.method}' / allocation '{cfg.allocation}' needs calibration data",
                              hint="pass calib=... (e.g. 128 real samples) or example_inputs")
        notes.append("calibrated on the example inputs only (no calib=... given): pass real samples for real accuracy")
    return as_data(calib, example_inputs)


def _sequential(model, layers, cfg, sparsities, batch, results, progress) -> None:
    """One forward pass; each target layer is pruned by a pre-hook the first time the pass reaches it."""
    need_h = sparsity_method(cfg.method).needs_hessian

    def make_hook(name, mod):
        def hook(module, args):
            if name in results or not args or not isinstance(args[0], torch.Tensor):
                return None
            x = input_matrix(nn.Linear(1, 1) if is_hf_conv1d(module) else module, args[0])
            moments = Moments(x.shape[1], need_hessian=need_h)
            for chunk in x.split(8192):  # bounded float64 temporaries
                moments.add(chunk)
            results[name] = _prune_layer(name, module, cfg, sparsities[name], moments)
            if progress:
                progress(len(results), len(layers), name)
            return None
        return hook

    handles = [mod.register_forward_pre_hook(make_hook(n, mod)) for n, mod in layers.items()]
    try:
        args, kwargs = batch
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()


__all__ = ["SparsityConfig", "sparsify", "METHODS", "ALLOCATIONS", "weight_matrix", "set_weight_matrix"]
