"""GA: gradient ascent on D_f (minimise -CE), the forget-only baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualoptim.tasks.images.train import ImageMethod, cross_entropy
from dualoptim.tasks.vision.methods import Built, VisionMethod, register
from dualoptim.unlearn import Schedule

if TYPE_CHECKING:
    from dualoptim.tasks.vision.config import UnlearnSpec
    from dualoptim.tasks.vision.experiment import World


class GA(ImageMethod):
    """Gradient ascent on D_f (minimise -CE). Single-objective baseline."""

    name = "ga"

    def forget_loss(self, model, batch, run):
        return -cross_entropy(model, batch)


def build(spec: UnlearnSpec, world: World, seed: int) -> Built:
    return GA(), Schedule(spec.epochs, retain_steps=0), {}


register(VisionMethod("ga", build, forget_lr={"alternate": 0.03}, retains=False))
