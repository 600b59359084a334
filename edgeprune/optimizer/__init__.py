"""The hardware-aware optimizer: plan -> prune + compensate -> recover -> verify on held-out data -> measure -> back off.

What lives here: `optimize` (the verb, api.py), `OptimizeConfig` (config.py, which builds the run's Target), the
search as a pipeline of named passes over one state (passes.py: attention, export_dense, find_layers, price_layers,
anchor, plan, attempts, retime, result), the decisions those passes make on measurements (run.py: re-timing,
re-planning, choosing the attempt), the planner (planner.py) and the pieces (core.py, context.py, shapes.py,
sensitivity.py, attention.py). The output folder is written by edgeprune.report.optimize.
It may import everything below it (targets, pruning, recover, data, metrics, measurement, backends); nothing below
imports it.
"""
from edgeprune.optimizer.api import optimize
from edgeprune.optimizer.config import OptimizeConfig
from edgeprune.optimizer.core import Attempt, OptimizeResult, apply_plan

__all__ = ["optimize", "OptimizeConfig", "apply_plan", "OptimizeResult", "Attempt"]
