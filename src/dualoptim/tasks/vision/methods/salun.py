"""SalUn: RL restricted to salient weights (SPEC §2.1, §1.6: masks both objectives)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor, nn

from dualoptim.tasks.images.train import ImageSource
from dualoptim.tasks.vision.methods import Built, VisionMethod, register
from dualoptim.tasks.vision.methods.gradients import mean_gradients
from dualoptim.tasks.vision.methods.rl import RL
from dualoptim.unlearn import Schedule
from dualoptim.unlearn.masks import cached_masks, install_masks, top_fraction_mask

if TYPE_CHECKING:
    from dualoptim.tasks.vision.config import UnlearnSpec
    from dualoptim.tasks.vision.experiment import World


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


def build(spec: UnlearnSpec, world: World, seed: int) -> Built:
    forget, retain = world.sources
    method = SalUn(
        len(forget),
        world.data.train.classes,
        seed=seed,
        forget=forget,
        retain=retain,
        keep=spec.salun_keep,
        mask_cache=world.mask_path("salun", "difference", spec.salun_keep, spec.batch_size),
        batch_size=spec.batch_size,
    )
    return method, Schedule(spec.epochs), {}


register(
    VisionMethod(
        "salun",
        build,
        forget_lr={"joint": 3e-4, "alternate": 1e-3, "dual": 1e-4, "dual_plus": 3e-4},
        options=frozenset({"salun_keep"}),
        per_phase_lr=True,
    )
)
