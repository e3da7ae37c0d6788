"""What the diffusion methods share: the DDPM loss on retain batches, the relabel loss, and
the batches their masks are estimated on.

Batches are (x in [-1, 1], labels, index). Every method's retain loss keeps the training
recipe's label dropout, so the empty condition that guidance subtracts keeps being trained.
Which optimizer setting runs a method is the experiment's business, not the method's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from diffusers import DDPMScheduler
from torch import Tensor, nn

from dualoptim.optim import ObjectiveOptimizer
from dualoptim.tasks.diffusion.data import LabelledImages
from dualoptim.tasks.diffusion.ddpm import denoising_losses, noised
from dualoptim.tasks.diffusion.models import Denoiser
from dualoptim.unlearn import RunState

if TYPE_CHECKING:
    from dualoptim.tasks.diffusion.config import GenUnlearnSpec

Batch = tuple[Tensor, Tensor, Tensor]


def sample_batches(
    source: LabelledImages, batch_size: int, max_batches: int, seed: int
) -> list[Batch]:
    """Up to ``max_batches`` batches of a seeded permutation: gradient statistics for masks
    are estimated on a stated number of batches, not on all of a large retain set."""
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))
    return [source.batch(i) for i in order.split(batch_size)[:max_batches]]


def mask_options(spec: GenUnlearnSpec) -> dict[str, Any]:
    """A masked method's mask statistics: the spec's batches, averaged over ``mask_batches``
    of them, drawn with seed 0 (so a mask is cached once for every run seed)."""
    return {"batch_size": spec.batch_size, "mask_batches": spec.mask_batches, "seed": 0}


@dataclass
class DenoisingMethod:
    """The DDPM loss on retain batches; no forget loss, no setup."""

    scheduler: DDPMScheduler
    label_dropout: float = 0.1
    name: str = "base"

    def ddpm(self, model: nn.Module, batch: Batch, dropout: float | None = None) -> Tensor:
        x, y, _ = batch
        p = self.label_dropout if dropout is None else dropout
        return denoising_losses(model, self.scheduler, x, y, p).mean()

    def setup(self, model: nn.Module, optimizer: ObjectiveOptimizer, run: RunState) -> None:
        pass

    def forget_loss(self, model: nn.Module, batch: Batch, run: RunState) -> Tensor | None:
        return None

    def retain_loss(self, model: nn.Module, batch: Batch, run: RunState) -> Tensor | None:
        return self.ddpm(model, batch)


@dataclass
class DDPMTraining(DenoisingMethod):
    """Training the original model: the DDPM loss with label dropout, as a retain-only run."""

    name: str = "ddpm"


def pseudo_labels(forgotten: Tensor, classes: int) -> Tensor:
    """A uniformly drawn class other than the forgotten one, per image."""
    draw = torch.randint(0, classes - 1, forgotten.shape, device=forgotten.device)
    return draw + (draw >= forgotten).long()


def relabel_losses(model: Denoiser, scheduler: DDPMScheduler, x: Tensor, y: Tensor) -> Tensor:
    """‖ε_θ(x_t, t, c_f) − sg(ε_θ(x_t, t, c_pseudo))‖² per image (SalUn's forget loss)."""
    x_t, _, t = noised(scheduler, x)
    with torch.no_grad():
        target = model(x_t, t, pseudo_labels(y, model.classes))
    return (model(x_t, t, y) - target).square().flatten(1).mean(1)
