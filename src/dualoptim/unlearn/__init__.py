"""The unlearning engine: one forget/retain loop for every task (classification, LLM,
diffusion)."""

from dualoptim.unlearn.engine import Engine, EngineConfig, PhaseOptions, RunResult, unlearn
from dualoptim.unlearn.method import Method, RunState, Source
from dualoptim.unlearn.schedule import Schedule, cosine_decay, lr_factor
from dualoptim.unlearn.stream import BatchStream

__all__ = [
    "BatchStream",
    "Engine",
    "EngineConfig",
    "Method",
    "PhaseOptions",
    "RunResult",
    "RunState",
    "Schedule",
    "Source",
    "cosine_decay",
    "lr_factor",
    "unlearn",
]
