"""SFR-on: Fisher-masked adaptive gradient ascent (or relabelling) on the forgotten class,
the DDPM loss on the rest (SPEC §2.2; the mask is on the forget objective only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from torch import Tensor, nn

from dualoptim.tasks.diffusion.data import LabelledImages, class_split
from dualoptim.tasks.diffusion.ddpm import denoising_losses
from dualoptim.tasks.diffusion.methods import Built, DiffusionMethod, register
from dualoptim.tasks.diffusion.methods.base import (
    Batch,
    DenoisingMethod,
    mask_options,
    relabel_losses,
    sample_batches,
)
from dualoptim.tasks.diffusion.models import Denoiser
from dualoptim.unlearn import cosine_decay
from dualoptim.unlearn.losses import adaptive_ascent
from dualoptim.unlearn.masks import cached_masks, install_masks, mean_batch_gradients

if TYPE_CHECKING:
    from dualoptim.tasks.diffusion.config import GenUnlearnSpec
    from dualoptim.tasks.diffusion.world import World


@dataclass
class SFRon(DenoisingMethod):
    """Forget mask [F_f / F_r ≥ 1] (F = mean squared batch gradient of the DDPM loss) on the
    forget objective only. Forget loss: adaptive-weighted gradient ascent -α_t·Σ w_i·l_i,
    w_i ∝ 1/(l_i^λ + 1e-15) (detached), or α_t × the relabel loss; α_t cosine-decayed."""

    forget: LabelledImages | None = None
    retain: LabelledImages | None = None
    alpha: float = 10.0
    lam: float = 0.5
    loss: Literal["ascent", "relabel"] = "ascent"
    batch_size: int = 64
    mask_batches: int = 16
    mask_cache: Path | None = None
    seed: int = 0
    name: str = "sfron"

    def _fisher_ratio(self, model: Denoiser) -> dict[str, Tensor]:
        assert self.forget is not None
        assert self.retain is not None

        def loss(m: nn.Module, batch: Batch) -> Tensor:
            return self.ddpm(m, batch, dropout=0.0)

        f_f, f_r = (
            mean_batch_gradients(
                model,
                sample_batches(source, self.batch_size, self.mask_batches, self.seed),
                loss,
                square=True,
            )
            for source in (self.forget, self.retain)
        )
        # F_f / F_r >= 1 without the division; 0/0 (a weight no batch moves) is out
        return {n: (f_f[n] >= f_r[n]) & (f_f[n] > 0) for n in f_f}

    def setup(self, model, optimizer, run):
        if self.forget is None or self.retain is None:
            raise ValueError("SFR-on needs its forget and retain images for the Fisher mask")
        if self.loss not in ("ascent", "relabel"):
            raise ValueError(f"SFR-on loss must be 'ascent' or 'relabel', got {self.loss!r}")
        masks = cached_masks(self.mask_cache, lambda: self._fisher_ratio(model))
        run.extras["mask"] = masks
        install_masks(model, optimizer, masks, ("forget",))

    def forget_loss(self, model, batch, run):
        x, y, _ = batch
        alpha = cosine_decay(self.alpha, run.progress)
        if self.loss == "relabel":
            return alpha * relabel_losses(model, self.scheduler, x, y).mean()
        return adaptive_ascent(denoising_losses(model, self.scheduler, x, y), self.lam, alpha)


def build(spec: GenUnlearnSpec, world: World, forgotten: int) -> Built:
    """The forgotten class's images as D_f, the others as D_r; the mask cached per class."""
    forget, retain = class_split(world.train_images, forgotten)
    options = mask_options(spec)
    method = SFRon(
        world.scheduler,
        forget=forget,
        retain=retain,
        alpha=spec.sfron_alpha,
        loss=spec.sfron_loss,
        mask_cache=world.mask_path("sfron", forgotten, options),
        label_dropout=spec.label_dropout,
        **options,
    )
    return method, forget, retain


#: As published: forget and retain steps alternating on one Adam at 1e-4 for 150
#: iterations, α = 10; DO's separate states need α = 1.
register(
    DiffusionMethod(
        "sfron",
        "SFR-on",
        build,
        setting="alternate",
        forget_lr=1e-4,
        iterations=150,
        alpha=(10.0, 1.0),
    )
)
