"""SCRUB: a student pulled away from / toward the original model as teacher (SPEC §2.1)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dualoptim.tasks.images.train import ImageMethod
from dualoptim.tasks.vision.methods import Built, VisionMethod, register
from dualoptim.unlearn import Schedule

if TYPE_CHECKING:
    from dualoptim.tasks.vision.config import UnlearnSpec
    from dualoptim.tasks.vision.experiment import World


@dataclass
class SCRUB(ImageMethod):
    """Teacher = the original model, frozen, eval mode. Forget: minimise -KL(p_t || p_s);
    retain: gamma·CE + alpha·KL(p_t || p_s). Temperature T (the paper's runs use 1)."""

    alpha: float = 0.5
    gamma: float = 1.0
    temperature: float = 1.0
    name: str = "scrub"
    teacher: nn.Module | None = field(default=None, init=False, repr=False)

    def setup(self, model, optimizer, run):
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)

    def _kl(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.teacher is None:
            raise RuntimeError("SCRUB.setup was not run: no teacher")
        t = self.temperature
        logits = model(x)
        with torch.no_grad():
            target = F.log_softmax(self.teacher(x) / t, dim=1)
        kl = F.kl_div(
            F.log_softmax(logits / t, dim=1), target, log_target=True, reduction="batchmean"
        )
        return kl * t * t, logits

    def forget_loss(self, model, batch, run):
        x, _, _ = batch
        kl, _ = self._kl(model, x)
        return -kl

    def retain_loss(self, model, batch, run):
        x, y, _ = batch
        kl, logits = self._kl(model, x)
        return self.gamma * F.cross_entropy(logits, y) + self.alpha * kl


def build(spec: UnlearnSpec, world: World, seed: int) -> Built:
    return SCRUB(), Schedule(spec.epochs), {}


register(
    VisionMethod(
        "scrub",
        build,
        forget_lr={"joint": 0.03, "alternate": 1e-3, "dual": 1e-3, "dual_plus": 1e-3},
        per_phase_lr=True,
    )
)
