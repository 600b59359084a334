"""The hardware-aware optimizer: plan -> prune + compensate -> recover -> verify on held-out data -> measure -> back off.

What lives here: `optimize` (the verb, api.py), `OptimizeConfig` (config.py), the search loop (run.py) and its
pieces (core.py, context.py, shapes.py, sensitivity.py, attention.py), and the output folder (output.py).
It may import everything below it (pruning, recover, data, metrics, latency, backends); nothing below imports it.
"""
from edgeprune.optimizer.api import optimize
from edgeprune.optimizer.config import OptimizeConfig
from edgeprune.optimizer.core import Attempt, OptimizeResult, apply_plan

__all__ = ["optimize", "OptimizeConfig", "apply_plan", "OptimizeResult", "Attempt"]
