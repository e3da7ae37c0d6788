"""SalUn: relabel the forgotten class to random others on its most salient weights, keep the
DDPM loss on the rest of the data (SPEC §2.2)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor, nn

from dualoptim.tasks.diffusion.data import LabelledImages, class_split
from dualoptim.tasks.diffusion.methods import Built, DiffusionMethod, register
from dualoptim.tasks.diffusion.methods.base import (
    Batch,
    DenoisingMethod,
    mask_options,
    relabel_losses,
    sample_batches,
)
from dualoptim.tasks.diffusion.models import Denoiser
from dualoptim.unlearn.masks import (
    cached_masks,
    install_masks,
    mean_batch_gradients,
    top_fraction_mask,
)

if TYPE_CHECKING:
    from dualoptim.tasks.diffusion.config import GenUnlearnSpec
    from dualoptim.tasks.diffusion.world import World


@dataclass
class SalUn(DenoisingMethod):
    """Forget = the relabel loss on D_f; retain = the DDPM loss on D_r. The saliency mask
    (top ``keep`` of |mean gradient of the forget loss| over D_f) restricts both objectives."""

    forget: LabelledImages | None = None
    keep: float = 0.5
    batch_size: int = 64
    mask_batches: int = 16
    mask_cache: Path | None = None
    seed: int = 0
    name: str = "salun"

    def _saliency(self, model: Denoiser) -> dict[str, Tensor]:
        assert self.forget is not None

        def loss(m: nn.Module, batch: Batch) -> Tensor:
            x, y, _ = batch
            return relabel_losses(m, self.scheduler, x, y).mean()

        batches = sample_batches(self.forget, self.batch_size, self.mask_batches, self.seed)
        grads = mean_batch_gradients(model, batches, loss, square=False)
        return top_fraction_mask({n: g.abs() for n, g in grads.items()}, self.keep)

    def setup(self, model, optimizer, run):
        if self.forget is None:
            raise ValueError("SalUn needs the forget images to compute its saliency mask")
        masks = cached_masks(self.mask_cache, lambda: self._saliency(model))
        run.extras["mask"] = masks
        install_masks(model, optimizer, masks, ("forget", "retain"))

    def forget_loss(self, model, batch, run):
        x, y, _ = batch
        return relabel_losses(model, self.scheduler, x, y).mean()


def build(spec: GenUnlearnSpec, world: World, forgotten: int) -> Built:
    """The forgotten class's images as D_f, the others as D_r; the mask cached per class."""
    forget, retain = class_split(world.train_images, forgotten)
    options = mask_options(spec)
    method = SalUn(
        world.scheduler,
        forget=forget,
        keep=spec.keep,
        mask_cache=world.mask_path("salun", forgotten, spec.keep, options),
        label_dropout=spec.label_dropout,
        **options,
    )
    return method, forget, retain


#: As published: its two losses summed (Joint) with the retain loss at 1e-3, Adam at 1e-5
#: for 1000 iterations.
register(
    DiffusionMethod(
        "salun",
        "SalUn",
        build,
        setting="joint",
        forget_lr=1e-5,
        iterations=1000,
        joint_retain_weight=1e-3,
    )
)
