"""FT: fine-tune on D_r only (CE), the retain-only baseline. Its class is classifier training
itself (``tasks.images.train.FT``); here it is registered as a vision method. It never takes
a forget step, so its one step size is η_r's 0.01 (not tuned)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualoptim.tasks.images.train import FT
from dualoptim.tasks.vision.methods import Built, VisionMethod, register
from dualoptim.unlearn import Schedule

if TYPE_CHECKING:
    from dualoptim.tasks.vision.config import UnlearnSpec
    from dualoptim.tasks.vision.experiment import World


def build(spec: UnlearnSpec, world: World, seed: int) -> Built:
    return FT(), Schedule(spec.epochs, forget_steps=0), {}


register(VisionMethod("ft", build, forget_lr={"alternate": 0.01}, forgets=False))
