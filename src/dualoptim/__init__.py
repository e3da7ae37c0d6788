"""dualoptim: stable machine unlearning with dual optimizers (DualOptim, DualOptim+)."""

from dualoptim.optim import (
    DualOptimizer,
    DualOptimPlus,
    ObjectiveOptimizer,
    OptimizerSpec,
    SharedOptimizer,
)

__version__ = "0.1.0"

__all__ = [
    "DualOptimPlus",
    "DualOptimizer",
    "ObjectiveOptimizer",
    "OptimizerSpec",
    "SharedOptimizer",
    "__version__",
]
