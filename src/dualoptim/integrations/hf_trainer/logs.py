"""Per-phase training logs: the Trainer logs one mixed ``loss``; these tell the phases apart.

``loss/forget`` and ``loss/retain`` are the weighted loss of that kind, mean over the
micro-batches of a step and over the steps of that kind since the last log line;
``learning_rate/forget`` and ``learning_rate/retain`` are the step sizes (the Trainer's
``learning_rate`` is only the scheduler's factor on both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor

from dualoptim.optim import Objective, ObjectiveOptimizer


class PhaseLosses:
    """The weighted losses of each kind between two log lines, as detached tensors (a
    ``float()`` per micro-batch would synchronise with the device)."""

    def __init__(self) -> None:
        self._micro_batch: dict[str, Tensor] = {}
        self._sums: dict[str, Tensor] = {}
        self._steps: dict[str, int] = {"forget": 0, "retain": 0}

    def record(self, kind: Objective, loss: Tensor) -> None:
        """Keeps the loss of ``kind`` of the current micro-batch."""
        self._micro_batch[kind] = loss.detach()

    def end_micro_batch(self, micro_batches: int) -> None:
        """Adds the current micro-batch's losses, each as its share of a step's mean."""
        for kind, value in self._micro_batch.items():
            total = self._sums.get(kind)
            part = value / micro_batches
            self._sums[kind] = part if total is None else total + part
        self._micro_batch = {}

    def end_step(self, kinds: Iterable[Objective]) -> None:
        """Counts an optimizer step for each of the losses it summed."""
        for kind in kinds:
            self._steps[kind] += 1

    def pop_means(self, reduce: Callable[[Tensor], Tensor] | None) -> dict[str, float]:
        """``loss/<kind>`` of every kind seen since the last call, then starts over.

        ``reduce`` averages a sum over processes (None: one process). Every process logs at
        the same step and all are in the same phases, so they reduce the same kinds together.
        """
        logs: dict[str, float] = {}
        for kind in ("forget", "retain"):
            steps = self._steps[kind]
            total = self._sums.pop(kind, None)
            self._steps[kind] = 0
            if total is None or steps == 0:
                continue
            if reduce is not None:
                total = reduce(total)
            logs[f"loss/{kind}"] = float(total) / steps
        return logs


def step_size_logs(optimizer: ObjectiveOptimizer | None, factor: Any) -> dict[str, float]:
    """``learning_rate/<kind>``: the step sizes of group 0 under the scheduler's ``factor``."""
    if optimizer is None or not optimizer.param_groups:
        return {}
    group = optimizer.param_groups[0]
    factor = float(factor)
    return {
        f"learning_rate/{kind}": factor * float(group[f"{kind}_lr"])
        for kind in ("forget", "retain")
        if f"{kind}_lr" in group
    }
