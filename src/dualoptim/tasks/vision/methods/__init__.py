"""The vision methods' registry: one module per method in this package registers a
``VisionMethod`` -- its defaults, the spec options it reads and how to build a run -- so
adding a method is one file (and a config line), with no table of defaults elsewhere.

Every module of this package is imported on the first lookup, so a new file registers
itself without being listed anywhere; a method defined outside it registers on import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from dualoptim.registry import Registry

if TYPE_CHECKING:
    from dualoptim.tasks.vision.config import UnlearnSpec
    from dualoptim.tasks.vision.experiment import World
    from dualoptim.unlearn import Method, Schedule

Built = tuple["Method", "Schedule", dict[str, Any]]


@dataclass(frozen=True)
class VisionMethod:
    """A method as the vision task runs it.

    ``forget_lr`` maps a base setting (``Setting.base``; the 8-bit settings share their fp32
    setting's) to the default η_f; a setting missing from it needs ``forget_lr`` in the
    config. The defaults were tuned with ``dualoptim tune`` (SPEC §1.3: η_r fixed at 0.01 for
    SGD and at 1e-4 for DO+'s retain side; the lowest Gap averaged over 3 seeds on the grids
    1e-4..0.3 for SGD, 1e-5..3e-3 for AdamW and DO+) on digits with a small CNN, 10% random
    forgetting and the scaled recipe of configs/vision/digits-all.yaml. Elsewhere they are
    starting points: re-tune on new data (docs/classification.md has the measured grids).
    ``options`` are the method's own spec fields (a report states them); ``length`` says
    which spec field sets the run's length.
    ``forgets``/``retains`` say whether it takes forget/retain steps at all, and
    ``per_phase_lr`` keeps η_r for Alternate's retain phases (as the official code does).
    """

    name: str
    build: Callable[[UnlearnSpec, World, int], Built]
    forget_lr: Mapping[str, float]
    options: frozenset[str] = field(default_factory=frozenset)
    length: Literal["epochs", "iterations"] = "epochs"
    forgets: bool = True
    retains: bool = True
    per_phase_lr: bool = False


REGISTRY: Registry[VisionMethod] = Registry("vision method", __name__)
register, get, names = REGISTRY.register, REGISTRY.get, REGISTRY.names
