"""SFR-on: Fisher-masked adaptive gradient ascent on D_f plus CE on D_r (SPEC §2.1, §1.6:
the mask is on the forget objective only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor, nn
from torch.nn import functional as F

from dualoptim.tasks.images.train import ImageMethod, ImageSource, cross_entropy
from dualoptim.tasks.vision.methods import Built, VisionMethod, register
from dualoptim.tasks.vision.methods.gradients import mean_gradients
from dualoptim.unlearn import PhaseOptions, Schedule, cosine_decay
from dualoptim.unlearn.losses import adaptive_ascent
from dualoptim.unlearn.masks import cached_masks, install_masks

if TYPE_CHECKING:
    from dualoptim.tasks.vision.config import UnlearnSpec
    from dualoptim.tasks.vision.experiment import World


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


def build(spec: UnlearnSpec, world: World, seed: int) -> Built:
    """Forget every 5th iteration, retain every iteration; forget gradients clipped at 7."""
    forget, retain = world.sources
    options = {"forget": PhaseOptions(clip_norm=7.0), "lr_schedule": "cosine"}
    method = SFRon(
        forget=forget,
        retain=retain,
        alpha=spec.sfron_alpha,
        batch_size=spec.batch_size,
        mask_cache=world.mask_path("sfron", spec.batch_size),
    )
    return method, Schedule(max(1, spec.iterations // 5), 1, 5), options


register(
    VisionMethod(
        "sfron",
        build,
        forget_lr={"joint": 0.03, "alternate": 0.1, "dual": 1e-4, "dual_plus": 3e-4},
        options=frozenset({"sfron_alpha"}),
        length="iterations",
    )
)
