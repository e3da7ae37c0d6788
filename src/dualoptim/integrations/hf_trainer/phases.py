"""The phase of every optimizer step: a pure function of the Trainer's ``global_step``.

Nothing here depends on what the data loader yields, so under gradient accumulation every
micro-batch of a step is of one kind, every process agrees, and a resumed run continues the
cycle where it stopped. The cycle is the engine's (:class:`~dualoptim.unlearn.schedule.Schedule`).
"""

from __future__ import annotations

from dualoptim.optim import Objective
from dualoptim.unlearn.schedule import Schedule, objective_at


class PhaseCycle:
    """``forget_steps`` forget steps, then ``retain_steps`` retain steps, repeated; with
    ``joint``, ``forget_steps`` joint steps (objective None) per cycle."""

    def __init__(self, forget_steps: int, retain_steps: int, *, joint: bool) -> None:
        if joint and forget_steps < 1:
            raise ValueError(
                "the joint setting makes forget_steps joint steps per cycle; need >= 1"
            )
        self.schedule = Schedule(1, forget_steps, retain_steps)
        #: One cycle as (objective, optimizer steps); objective None = a joint step.
        self.phases = self.schedule.cycle(0, 0, joint=joint)
        #: The sides whose data some step of the cycle uses.
        self.needed = frozenset({"forget", "retain"} if joint else {o for o, _ in self.phases})

    def objective_at(self, step: int) -> Objective | None:
        """The objective of optimizer step ``step`` (0-based); None = a joint step."""
        return objective_at(self.phases, step)

    def cycle_at(self, step: int) -> int:
        """The 0-based cycle optimizer step ``step`` belongs to."""
        return step // sum(n for _, n in self.phases)


def losses_of(objective: Objective | None) -> tuple[Objective, ...]:
    """The losses a step of ``objective`` sums: its own, or both on a joint step (None)."""
    return ("forget", "retain") if objective is None else (objective,)
