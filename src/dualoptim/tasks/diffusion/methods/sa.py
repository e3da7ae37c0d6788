"""SA (Selective Amnesia): forget by learning noise under the forgotten label, retain by
replaying the original model's samples and an EWC penalty towards its weights (SPEC §2.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from diffusers import DDPMScheduler
from torch import Tensor, nn

from dualoptim.tasks.diffusion.data import LabelledImages, NoiseImages, class_split
from dualoptim.tasks.diffusion.ddpm import denoising_losses
from dualoptim.tasks.diffusion.methods import Built, DiffusionMethod, register
from dualoptim.tasks.diffusion.methods.base import Batch, DenoisingMethod
from dualoptim.tasks.diffusion.models import Denoiser
from dualoptim.unlearn.masks import mean_batch_gradients

if TYPE_CHECKING:
    from dualoptim.tasks.diffusion.config import GenUnlearnSpec
    from dualoptim.tasks.diffusion.world import World


@dataclass
class SelectiveAmnesia(DenoisingMethod):
    """SA: forget = DDPM loss of uniform noise images labelled as the forgotten class;
    retain = γ·DDPM loss on replayed samples of the other classes + λ·Σ_i F_i(θ_i − θ*_i)²,
    with F the diagonal Fisher from the original model's samples and θ* its weights."""

    fisher: dict[str, Tensor] = field(default_factory=dict)
    gamma: float = 1.0
    lam: float = 10.0
    name: str = "sa"
    anchor: dict[str, Tensor] = field(default_factory=dict, init=False, repr=False)

    def setup(self, model, optimizer, run):
        params = dict(model.named_parameters())
        missing = params.keys() - self.fisher.keys()
        if missing:
            raise ValueError(f"SA's Fisher lacks parameters of the model: {sorted(missing)[:3]}")
        self.anchor = {n: p.detach().clone() for n, p in params.items()}

    def forget_loss(self, model, batch, run):
        return self.ddpm(model, batch, dropout=0.0)

    def penalty(self, model: nn.Module) -> Tensor:
        """Σ_i F_i (θ_i − θ*_i)² (elastic weight consolidation towards the original model)."""
        if not self.anchor:
            raise RuntimeError("SelectiveAmnesia.setup was not run: no anchor weights")
        terms = [
            (self.fisher[n].to(p.device) * (p - self.anchor[n].to(p.device)).square()).sum()
            for n, p in model.named_parameters()
        ]
        return torch.stack(terms).sum()

    def retain_loss(self, model, batch, run):
        return self.gamma * self.ddpm(model, batch) + self.lam * self.penalty(model)


def fisher_diagonal(
    model: Denoiser, scheduler: DDPMScheduler, images: LabelledImages, batch_size: int
) -> dict[str, Tensor]:
    """SA's diagonal Fisher: the mean squared gradient of the DDPM loss over batches of the
    original model's own samples (``images``)."""

    def loss(m: nn.Module, batch: Batch) -> Tensor:
        x, y, _ = batch
        return denoising_losses(m, scheduler, x, y).mean()

    batches = [images.batch(i) for i in torch.arange(len(images)).split(batch_size)]
    return mean_batch_gradients(model, batches, loss, square=True)


def build(spec: GenUnlearnSpec, world: World, forgotten: int) -> Built:
    """Noise images as D_f (as many as the forgotten class has), the original model's
    samples of the other classes as D_r."""
    forget, _ = class_split(world.train_images, forgotten)
    noise = NoiseImages(len(forget), forgotten, world.data.image_shape)
    fisher = world.fisher(spec.fisher_per_class, spec.batch_size)
    method = SelectiveAmnesia(
        world.scheduler,
        fisher=fisher,
        gamma=spec.gamma,
        lam=spec.lam,
        label_dropout=spec.label_dropout,
    )
    return method, noise, world.replay(forgotten, spec.replay_per_class)


#: As published: its two losses summed (Joint), Adam at 1e-4 for 20k iterations.
register(DiffusionMethod("sa", "SA", build, setting="joint", forget_lr=1e-4, iterations=20_000))
