"""Image-classification unlearning methods (SPEC §2.1), each a named pair of losses + setup.

Batches are (x, y, index) with index the position in the method's forget or retain set, so
RL can keep one fixed random label per forget example. Masks are installed on the optimizer
per objective (SPEC §1.6): SalUn masks both objectives, SFR-on only the forget one. FT, the
retain-only baseline, is classifier training itself: it lives in ``tasks.images.train``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dualoptim.tasks.images.train import ImageMethod, ImageSource, cross_entropy
from dualoptim.unlearn import cosine_decay
from dualoptim.unlearn.losses import adaptive_ascent
from dualoptim.unlearn.masks import (
    cached_masks,
    install_masks,
    mean_batch_gradients,
    top_fraction_mask,
)


class GA(ImageMethod):
    """Gradient ascent on D_f (minimise -CE). Single-objective baseline."""

    name = "ga"

    def forget_loss(self, model, batch, run):
        return -cross_entropy(model, batch)


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


def mean_gradients(
    model: nn.Module, source: ImageSource, batch_size: int, square: bool
) -> dict[str, Tensor]:
    """Mean over batches of each parameter's batch gradient of CE (squared if ``square``)."""
    device = next(model.parameters()).device

    def ce(m: nn.Module, index: Tensor) -> Tensor:
        x, y, _ = source.batch(index)
        return F.cross_entropy(m(x.to(device)), y.to(device))

    batches = torch.arange(len(source)).split(batch_size)
    return mean_batch_gradients(model, batches, ce, square)


@dataclass
class SalUn(RL):
    """RL restricted to salient weights: score |G_f| - |G_r| (the paper's variant) or |G_f|
    (original SalUn); keep the top ``keep`` fraction globally; masks both objectives."""

    forget: ImageSource | None = None
    retain: ImageSource | None = None
    score: str = "difference"
    keep: float = 0.5
    batch_size: int = 256
    mask_cache: Path | None = None
    name: str = "salun"

    def _saliency(self, model: nn.Module) -> dict[str, Tensor]:
        g_f = mean_gradients(model, self.forget, self.batch_size, square=False)
        scores = {n: g.abs() for n, g in g_f.items()}
        if self.score == "difference":
            g_r = mean_gradients(model, self.retain, self.batch_size, square=False)
            scores = {n: s - g_r[n].abs() for n, s in scores.items()}
        return top_fraction_mask(scores, self.keep)

    def setup(self, model, optimizer, run):
        if self.forget is None or self.retain is None:
            raise ValueError("SalUn needs its forget and retain sources to compute saliency")
        if self.score not in ("difference", "forget"):
            raise ValueError(f"SalUn score must be 'difference' or 'forget', got {self.score!r}")
        masks = cached_masks(self.mask_cache, lambda: self._saliency(model))
        run.extras["mask"] = masks
        install_masks(model, optimizer, masks, ("forget", "retain"))


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


@dataclass
class SFRon(ImageMethod):
    """Forget mask [F_f / F_r >= 1] (F = mean squared batch gradient) on the forget objective
    only. Forget loss = -α_t·Σ w_i·l_i, w_i ∝ 1/(l_i^λ + 1e-15) (detached), α_t cosine-decayed
    from ``alpha``. The engine masks forget gradients before clipping them (norm 7)."""

    forget: ImageSource | None = None
    retain: ImageSource | None = None
    alpha: float = 25.0
    lam: float = 0.5
    batch_size: int = 256
    mask_cache: Path | None = None
    name: str = "sfron"
    decay: Callable[[float, float], float] = cosine_decay

    def _fisher_ratio(self, model: nn.Module) -> dict[str, Tensor]:
        f_f = mean_gradients(model, self.forget, self.batch_size, square=True)
        f_r = mean_gradients(model, self.retain, self.batch_size, square=True)
        # F_f / F_r >= 1, written without the division; 0/0 (a weight no batch moves) is out
        return {n: (f_f[n] >= f_r[n]) & (f_f[n] > 0) for n in f_f}

    def setup(self, model, optimizer, run):
        if self.forget is None or self.retain is None:
            raise ValueError("SFR-on needs its forget and retain sources for the Fisher mask")
        masks = cached_masks(self.mask_cache, lambda: self._fisher_ratio(model))
        run.extras["mask"] = masks
        install_masks(model, optimizer, masks, ("forget",))

    def forget_loss(self, model, batch, run):
        x, y, _ = batch
        losses = F.cross_entropy(model(x), y, reduction="none")
        return adaptive_ascent(losses, self.lam, self.decay(self.alpha, run.progress))

    def retain_loss(self, model, batch, run):
        return cross_entropy(model, batch)


METHODS = ("ft", "ga", "rl", "salun", "scrub", "sfron")
