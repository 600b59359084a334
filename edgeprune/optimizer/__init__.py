"""The hardware-aware optimizer: latency model -> plan -> prune -> validate -> measure -> back off."""
from edgeprune.optimizer.core import Attempt, OptimizeResult, apply_plan
from edgeprune.optimizer.run import optimize

__all__ = ["optimize", "apply_plan", "OptimizeResult", "Attempt"]
