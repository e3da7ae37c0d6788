"""Training a classifier (the original model on all of D_train, the gold standard RT on D_r,
the judge of generated images) on in-memory images.

All run on the unlearning engine -- the project's one training loop -- as a retain-only
schedule of FT with the pretraining optimizer (SGD, momentum 0.9, weight decay 5e-4, cosine
learning rate), so they inherit its checkpoints, resume and accelerate support. FT lives
here because training a classifier is FT on its whole training set; the vision task uses
the same class as its single-objective baseline "ft".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator
from torch import Tensor, nn
from torch.nn import functional as F

from dualoptim.optim import ObjectiveOptimizer, OptimizerSpec, SharedOptimizer
from dualoptim.unlearn import EngineConfig, RunResult, RunState, Schedule, unlearn


@dataclass(frozen=True)
class ImageSource:
    """A Source over in-memory images: batches are (x, y, index)."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.x[index], self.y[index], index


def cross_entropy(model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """The mean CE of ``model`` on an ``ImageSource`` batch."""
    x, y, _ = batch
    return F.cross_entropy(model(x), y)


class ImageMethod:
    """No setup, no losses: a method on ``ImageSource`` batches fills in what it has."""

    name = "base"

    def setup(self, model: nn.Module, optimizer: ObjectiveOptimizer, run: RunState) -> None:
        pass

    def forget_loss(self, model: nn.Module, batch, run: RunState) -> Tensor | None:
        return None

    def retain_loss(self, model: nn.Module, batch, run: RunState) -> Tensor | None:
        return None


class FT(ImageMethod):
    """Fine-tune on D_r only (CE). Single-objective baseline."""

    name = "ft"

    def retain_loss(self, model, batch, run):
        return cross_entropy(model, batch)


@dataclass(frozen=True)
class TrainRecipe:
    """How the original model and RT learn: SGD with momentum, a cosine schedule."""

    epochs: int = 30
    lr: float = 0.05
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:  # a config's train section: fail before any training
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")

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
