"""edgeprune.sweeper (the verb is edgeprune.sweep): many models x targets x budgets x precisions on Ray, each timed on its target's node.

May import: edgeprune core modules, optimizer, deploy, data, targets, measurement (never cli or report's CLI
parts). Ray is imported only when a sweep runs.
"""
from edgeprune.sweeper.driver import sweep
from edgeprune.sweeper.spec import SweepSpec, load_sweep

__all__ = ["sweep", "SweepSpec", "load_sweep"]
