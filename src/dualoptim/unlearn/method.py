"""What a task hands the engine: data sources and a method (a named pair of losses + setup).

A method returns its forget loss and its retain loss separately -- exactly what a
two-optimizer step needs. Either may be absent (FT has no forget loss, GA no retain loss).
``setup`` runs once before the first step, with the optimizer at hand, to install masks, a
frozen teacher or a reference model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from dualoptim.optim import Objective, ObjectiveOptimizer


@runtime_checkable
class Source(Protocol):
    """A data set the engine draws batches from: a length and a batch for given indices."""

    def __len__(self) -> int: ...

    def batch(self, index: Tensor) -> Any: ...


@dataclass
class RunState:
    """Where a run is; methods read it (e.g. SFR-on's α decays with ``progress``)."""

    total_steps: int
    step: int = 0
    cycle: int = 0
    phase: Objective | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # what setup() prepares

    @property
    def progress(self) -> float:
        return self.step / max(self.total_steps, 1)


class Method(Protocol):
    """A named pair of losses plus optional setup."""

    name: str

    def setup(self, model: nn.Module, optimizer: ObjectiveOptimizer, run: RunState) -> None: ...

    def forget_loss(self, model: nn.Module, batch: Any, run: RunState) -> Tensor | None: ...

    def retain_loss(self, model: nn.Module, batch: Any, run: RunState) -> Tensor | None: ...
