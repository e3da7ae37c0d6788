"""Training the original model (on all of D_train) and the retrained gold standard RT (on D_r).

Both run on the unlearning engine -- the project's one training loop -- as a retain-only
schedule of FT with the pretraining optimizer (SGD, momentum 0.9, weight decay 5e-4, cosine
learning rate), so they inherit its checkpoints, resume and accelerate support.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator
from torch import nn

from dualoptim.optim import OptimizerSpec, SharedOptimizer
from dualoptim.tasks.vision.methods import FT, ImageSource
from dualoptim.unlearn import EngineConfig, RunResult, Schedule, unlearn


@dataclass(frozen=True)
class TrainRecipe:
    epochs: int = 30
    lr: float = 0.05
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def optimizer_spec(self) -> OptimizerSpec:
        return OptimizerSpec(
            "sgd", {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}
        )


def train_classifier(
    model: nn.Module,
    data: ImageSource,
    recipe: TrainRecipe,
    *,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    accelerator: Accelerator | None = None,
    progress: bool = False,
) -> RunResult:
    """Train ``model`` on ``data`` in place (CE, SGD with momentum, cosine schedule)."""
    optimizer = SharedOptimizer(model.parameters(), recipe.optimizer_spec())
    config = EngineConfig(
        Schedule(recipe.epochs, forget_steps=0),
        retain_batch=recipe.batch_size,
        lr_schedule="cosine",
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=50 if checkpoint_dir is not None else 0,
        progress=progress,
    )
    return unlearn(model, FT(), None, data, optimizer, config, accelerator=accelerator)
