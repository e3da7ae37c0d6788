"""ℓ1-sparse: fine-tune on D_r with CE + γ_t·‖θ‖₁, γ_t decaying linearly from γ₀ to 0 over
the run (Jia et al. 2023, "Model Sparsity Can Simplify Machine Unlearning"). No forget
objective: the sparsity prior alone moves the model away from what only D_f supported.

SPEC does not list it; implemented as the paper describes. γ₀ is the paper's default 5e-4,
a constant rather than a config field (a new UnlearnSpec field would change every vision
record id). γ decays with the run's progress per step (the official code steps it per
epoch). Like FT every step is a retain step, so its default step size under Alternate is
η_r's 0.01 (not tuned), and the other settings need ``forget_lr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor, nn

from dualoptim.tasks.images.train import ImageMethod, cross_entropy
from dualoptim.tasks.vision.methods import Built, VisionMethod, register
from dualoptim.unlearn import RunState, Schedule

if TYPE_CHECKING:
    from dualoptim.tasks.vision.config import UnlearnSpec
    from dualoptim.tasks.vision.experiment import World

GAMMA = 5e-4  # γ₀, the paper's default


def l1_norm(model: nn.Module) -> Tensor:
    """‖θ‖₁ over every trainable parameter."""
    return sum(p.abs().sum() for p in model.parameters() if p.requires_grad)


@dataclass
class L1Sparse(ImageMethod):
    """CE on D_r plus γ_t·‖θ‖₁ with γ_t = γ₀·(1 - progress)."""

    gamma: float = GAMMA
    name: str = "l1sparse"

    def gamma_at(self, run: RunState) -> float:
        return self.gamma * (1.0 - run.progress)

    def retain_loss(self, model, batch, run):
        return cross_entropy(model, batch) + self.gamma_at(run) * l1_norm(model)


def build(spec: UnlearnSpec, world: World, seed: int) -> Built:
    return L1Sparse(), Schedule(spec.epochs, forget_steps=0), {}


register(VisionMethod("l1sparse", build, forget_lr={"alternate": 0.01}, forgets=False))
