"""What the engine does when: Algorithm 1's cycles and the step-size schedules.

``Schedule(cycles=T_o, forget_steps=T_f, retain_steps=T_r)``: each cycle makes T_f forget
optimizer steps, then T_r retain steps. A count of None means one pass over that set per
cycle (the classification RL/SalUn/SCRUB protocol: an "epoch" is a pass over D_f then a pass
over D_r). SFR-on's 1:5 over 1500 iterations is ``Schedule(300, 1, 5)``.

The Joint baseline steps once per (forget batch, retain batch) pair on c_f·L_f + c_r·L_r;
its cycle makes ``forget_steps`` such steps (None: one pass over D_f).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dualoptim.optim import Objective

LR_SCHEDULES = ("constant", "cosine", "linear")


@dataclass(frozen=True)
class Schedule:
    cycles: int
    forget_steps: int | None = None
    retain_steps: int | None = None

    def __post_init__(self) -> None:
        if self.cycles < 1:
            raise ValueError(f"schedule needs at least one cycle, got {self.cycles}")
        for name in ("forget_steps", "retain_steps"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None (one pass), got {value}")
        if self.forget_steps == 0 and self.retain_steps == 0:
            raise ValueError("a schedule with no forget and no retain steps does nothing")

    def cycle(
        self, forget_pass: int, retain_pass: int, joint: bool = False
    ) -> list[tuple[Objective | None, int]]:
        """The phases of one cycle as (objective, optimizer steps); objective None = joint."""
        forget = forget_pass if self.forget_steps is None else self.forget_steps
        if joint:
            return [(None, forget)]
        retain = retain_pass if self.retain_steps is None else self.retain_steps
        return [(o, n) for o, n in (("forget", forget), ("retain", retain)) if n > 0]

    def total_steps(self, forget_pass: int, retain_pass: int, joint: bool = False) -> int:
        per_cycle = sum(n for _, n in self.cycle(forget_pass, retain_pass, joint))
        return self.cycles * per_cycle


def objective_at(phases: Sequence[tuple[Objective | None, int]], step: int) -> Objective | None:
    """The objective of optimizer step ``step`` (0-based) when ``phases`` repeat cycle after cycle.

    ``phases`` is what :meth:`Schedule.cycle` returns; None means a joint step. A pure function
    of the step count, so every process and a resumed run agree on the phase of every step.
    """
    period = sum(n for _, n in phases)
    if period <= 0:
        raise ValueError(f"a cycle of phases {list(phases)} makes no optimizer steps")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    position = step % period
    for objective, steps in phases:
        if position < steps:
            return objective
        position -= steps
    raise AssertionError("unreachable: position < period")  # pragma: no cover


def lr_factor(kind: str, total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """The factor on every step size after ``step`` optimizer steps (LambdaLR's lambda).

    "cosine": 1 → 0 over the run (SFR-on); "linear": linear warm-up over ``warmup_steps``, then
    linear decay to 0 (the TOFU recipe); "constant": 1.
    """
    if kind not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {kind!r}; choose one of {', '.join(LR_SCHEDULES)}")
    total = max(total_steps, 1)

    def constant(_: int) -> float:
        return 1.0

    def cosine(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    def linear(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total - step) / max(total - warmup_steps, 1))

    return {"constant": constant, "cosine": cosine, "linear": linear}[kind]


def cosine_decay(start: float, progress: float) -> float:
    """α_t = α·(1 + cos(π·t/T))/2 -- SFR-on's forget-weight schedule; progress = t/T."""
    return start * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
