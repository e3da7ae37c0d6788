"""RL: random labels on D_f plus CE on D_r (SPEC §2.1).

Batches are (x, y, index) with index the position in the forget set, so RL keeps one fixed
random label per forget example."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn import functional as F

from dualoptim.tasks.images.train import ImageMethod, cross_entropy
from dualoptim.tasks.vision.methods import Built, VisionMethod, register
from dualoptim.unlearn import Schedule

if TYPE_CHECKING:
    from dualoptim.tasks.vision.config import UnlearnSpec
    from dualoptim.tasks.vision.experiment import World


@dataclass
class RL(ImageMethod):
    """Random labels on D_f (drawn once, uniformly; may equal the true label) + CE on D_r."""

    forget_size: int
    classes: int
    seed: int = 0
    name: str = "rl"
    labels: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        self.labels = torch.randint(0, self.classes, (self.forget_size,), generator=gen)

    def forget_loss(self, model, batch, run):
        x, _, index = batch
        return F.cross_entropy(model(x), self.labels.to(index.device)[index])

    def retain_loss(self, model, batch, run):
        return cross_entropy(model, batch)


def build(spec: UnlearnSpec, world: World, seed: int) -> Built:
    forget, _ = world.sources
    return RL(len(forget), world.data.train.classes, seed=seed), Schedule(spec.epochs), {}


register(
    VisionMethod(
        "rl",
        build,
        forget_lr={"joint": 3e-4, "alternate": 0.1, "dual": 1e-4, "dual_plus": 1e-4},
        per_phase_lr=True,
    )
)
