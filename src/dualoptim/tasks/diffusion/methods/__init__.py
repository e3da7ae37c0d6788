"""The diffusion methods' registry: one module per method in this package registers a
``DiffusionMethod`` -- its label, its published setting, step size and length (SPEC §2.2),
its other defaults and how to build a run -- so adding a method is one file (and a config
line), with no table of defaults elsewhere.

Every module of this package is imported on the first lookup, so a new file registers
itself without being listed anywhere; a method defined outside it registers on import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dualoptim.registry import Registry

if TYPE_CHECKING:
    from dualoptim.optim.settings import Setting, SettingName
    from dualoptim.tasks.diffusion.config import GenUnlearnSpec
    from dualoptim.tasks.diffusion.world import World

#: (method, forget source, retain source) of a run for one forgotten class.
Built = tuple[Any, Any, Any]


@dataclass(frozen=True)
class DiffusionMethod:
    """A method as the diffusion task runs it, with its published defaults.

    ``setting``, ``forget_lr`` and ``iterations`` are the method as published (its paper's
    optimizer setting, step size and length at paper scale); a spec's unset values take them.
    ``joint_retain_weight`` is c_r under a joint setting (SalUn's published form sums its
    retain loss at 1e-3); every other setting weighs the retain loss 1. ``alpha`` is the
    method's forget-loss scale (shared optimizer, DO's own states) when it reads ``alpha``:
    a shared optimizer balances a larger α than DO's separate states need.
    ``build(spec, world, forgotten)`` makes the run's method and its two sources.
    """

    name: str
    label: str
    build: Callable[[GenUnlearnSpec, World, int], Built]
    setting: SettingName
    forget_lr: float
    iterations: int
    joint_retain_weight: float = 1.0
    alpha: tuple[float, float] | None = None

    def default_alpha(self, setting: Setting) -> float | None:
        """The α of ``alpha`` that fits ``setting``; None when the method has no α."""
        if self.alpha is None:
            return None
        shared, own = self.alpha
        return shared if setting.shared else own


REGISTRY: Registry[DiffusionMethod] = Registry("diffusion method", __name__)
register, get, names = REGISTRY.register, REGISTRY.get, REGISTRY.names
