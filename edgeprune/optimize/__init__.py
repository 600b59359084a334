"""The hardware-aware optimizer: latency model -> plan -> prune -> validate -> measure -> back off."""
from edgeprune.optimize.core import Attempt, OptimizeResult, apply_plan
from edgeprune.optimize.run import optimize

__all__ = ["optimize", "apply_plan", "OptimizeResult", "Attempt"]
