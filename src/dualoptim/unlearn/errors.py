"""How a run ends without a result: errors a sweep records as a failed run and goes on."""

from __future__ import annotations


class RunDivergedError(FloatingPointError, ValueError):
    """A loss became non-finite at optimizer step ``step``: a result of the step size (a NaN
    at ×10 η_f is a finding), not a bug. A FloatingPointError for what it is, a ValueError so
    that outside a sweep it ends the command as one line, like any bad setting."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step
