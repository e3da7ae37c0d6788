"""Optimizers for unlearning: one explicit objective ("forget" | "retain") per step."""

from dualoptim.optim.dual import DualOptimizer, SharedOptimizer
from dualoptim.optim.inner import OptimizerSpec
from dualoptim.optim.objective import OBJECTIVES, Objective, ObjectiveOptimizer
from dualoptim.optim.plus import DualOptimPlus

__all__ = [
    "OBJECTIVES",
    "DualOptimPlus",
    "DualOptimizer",
    "Objective",
    "ObjectiveOptimizer",
    "OptimizerSpec",
    "SharedOptimizer",
]
