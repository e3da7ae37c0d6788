"""Class-unlearning methods for conditional diffusion (SPEC §2.2), each a pair of losses + setup.

Batches are (x in [-1, 1], labels, index). Every method's retain loss keeps the training
recipe's label dropout, so the empty condition that guidance subtracts keeps being trained.
Which optimizer setting runs a method (SA and SalUn as published: Joint; SFR-on: Alternate;
"+DO": Dual) is the experiment's business, not the method's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from diffusers import DDPMScheduler
from torch import Tensor, nn

from dualoptim.optim import ObjectiveOptimizer
from dualoptim.tasks.diffusion.data import LabelledImages
from dualoptim.tasks.diffusion.ddpm import denoising_losses, noised
from dualoptim.tasks.diffusion.models import Denoiser
from dualoptim.unlearn import RunState, cosine_decay
from dualoptim.unlearn.losses import adaptive_ascent
from dualoptim.unlearn.masks import (
    cached_masks,
    install_masks,
    mean_batch_gradients,
    top_fraction_mask,
)

Batch = tuple[Tensor, Tensor, Tensor]


def sample_batches(
    source: LabelledImages, batch_size: int, max_batches: int, seed: int
) -> list[Batch]:
    """Up to ``max_batches`` batches of a seeded permutation: gradient statistics for masks
    are estimated on a stated number of batches, not on all of a large retain set."""
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))
    return [source.batch(i) for i in order.split(batch_size)[:max_batches]]


@dataclass
class _Base:
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
class DDPMTraining(_Base):
    """Training the original model: the DDPM loss with label dropout, as a retain-only run."""

    name: str = "ddpm"


@dataclass
class SelectiveAmnesia(_Base):
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


@dataclass
class SalUn(_Base):
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


@dataclass
class SFRon(_Base):
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
