"""LLM unlearning methods (SPEC §2.3): a forget loss, optionally paired with a retain loss.

A method is named ``FORGET+RETAIN`` (``"npo+kl"``, ``"ME+GD"``) or ``FORGET`` alone (``"ga"``:
no retain loss); the names resolve through the registry of
:mod:`dualoptim.tasks.llm.objectives`, where each loss says what it needs. Batches are dicts:
``{"qa": encoding, "index": LongTensor[B]}`` plus ``"idk"`` -- the same questions with refusal
answers -- for the losses that read refusals. An encoding holds ``input_ids``,
``attention_mask`` and ``labels`` (-100 off the answer). Losses that compare with a reference
use a frozen copy of the model as given to ``setup`` (the target, before unlearning), kept in
``run.extras["reference"]``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from dualoptim.optim import ObjectiveOptimizer
from dualoptim.tasks.llm import losses, objectives
from dualoptim.tasks.llm.objectives import REFERENCE, Objective, Side, logits
from dualoptim.unlearn import RunState

#: The combinations of the paper (any forget loss, alone or with any retain loss, is accepted).
COMBINATIONS = (
    "ga+gd",
    "ga+kl",
    "npo+gd",
    "npo+kl",
    "simnpo+gd",
    "dpo+gd",
    "me+gd",
    "idk+ap",
    "idk+gd",
)
#: The registered forget losses (SPEC order, then newer ones) and retain losses.
FORGET_LOSSES = objectives.names("forget")
RETAIN_LOSSES = objectives.names("retain")


@dataclass(frozen=True)
class LossOptions:
    """Hyperparameters of the losses (SPEC §2.3 defaults)."""

    npo_beta: float = 0.1
    simnpo_beta: float = 2.5
    simnpo_gamma: float = 0.0
    dpo_beta: float = 0.1
    ap_beta: float = 0.1

    def __post_init__(self) -> None:
        for name in ("npo_beta", "simnpo_beta", "dpo_beta", "ap_beta"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not math.isfinite(self.simnpo_gamma):
            raise ValueError(f"simnpo_gamma must be finite, got {self.simnpo_gamma!r}")


def parse_method(name: str) -> tuple[Objective, Objective | None]:
    """``"NPO+KL"`` -> the npo and kl objectives; ``"ga"`` -> (ga, None). Raises ValueError."""
    allowed = (
        f"forget losses {', '.join(objectives.names('forget'))}; "
        f"retain losses {', '.join(objectives.names('retain'))}; written FORGET or FORGET+RETAIN "
        "(a loss registers itself in a module of dualoptim/tasks/llm/objectives/)"
    )
    parts = [p.strip().lower() for p in str(name).split("+")]
    forget = objectives.get(parts[0], "forget")
    if len(parts) > 2 or forget is None:
        raise ValueError(f"unknown LLM method {name!r}: {allowed}")
    if len(parts) == 1:
        return forget, None
    retain = objectives.get(parts[1], "retain")
    if retain is None:
        raise ValueError(f"unknown retain loss {parts[1]!r} in LLM method {name!r}: {allowed}")
    return forget, retain


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with no gradients, on the model's device and dtype."""
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
        p.grad = None
    return reference


class LLMMethod:
    """A TOFU unlearning method: the Method protocol of :mod:`dualoptim.unlearn`.

    ``name`` is the canonical lower-case name (``"npo+kl"``); ``forget``/``retain`` are its
    parts' names (``retain`` None for a forget loss alone) and ``forget_objective`` /
    ``retain_objective`` their registered records.
    """

    def __init__(
        self, name: str, options: LossOptions | None = None, reference: nn.Module | None = None
    ) -> None:
        self.forget_objective, self.retain_objective = parse_method(name)
        #: what NPO/DPO/KL compare with; None: the model as given at setup (a continual
        #: request's option ``reference: original`` gives the target here)
        self.reference = reference
        self.forget = self.forget_objective.name
        self.retain = None if self.retain_objective is None else self.retain_objective.name
        self.name = self.forget if self.retain is None else f"{self.forget}+{self.retain}"
        self.options = LossOptions() if options is None else options

    def __repr__(self) -> str:
        return f"LLMMethod({self.name!r}, {self.options!r})"

    # ------------------------------------------------------------------ properties
    @property
    def needs_reference(self) -> bool:
        """Whether a loss compares with the frozen target (NPO, DPO, KL)."""
        parts = (self.forget_objective, self.retain_objective)
        return any(o is not None and o.needs_reference for o in parts)

    @property
    def forget_needs_refusals(self) -> bool:
        """Whether the forget loss reads the batch's "idk" encoding (IDK, DPO)."""
        return self.forget_objective.needs_refusals

    @property
    def retain_needs_refusals(self) -> bool:
        """Whether the retain loss reads the batch's "idk" encoding (AP)."""
        return self.retain_objective is not None and self.retain_objective.needs_refusals

    # ------------------------------------------------------------------ protocol
    def setup(self, model: nn.Module, optimizer: ObjectiveOptimizer, run: RunState) -> None:
        """Freeze a copy of the model as given (the target), or of ``reference``, when a
        loss needs one; copy nothing otherwise (an LLM copy doubles the weights' memory)."""
        if self.needs_reference:
            run.extras[REFERENCE] = frozen_copy(model if self.reference is None else self.reference)

    def forget_loss(self, model: nn.Module, batch: Any, run: RunState) -> Tensor | None:
        return self._loss(self.forget_objective, "forget", model, batch, run)

    def retain_loss(self, model: nn.Module, batch: Any, run: RunState) -> Tensor | None:
        if self.retain_objective is None:
            return None
        return self._loss(self.retain_objective, "retain", model, batch, run)

    def _loss(
        self, objective: Objective, side: Side, model: nn.Module, batch: Any, run: RunState
    ) -> Tensor:
        ctx = objectives.Context(model, run, self.options, self.name, side, objective.name)
        return objective.loss(ctx, batch)


class FineTune:
    """Retain-only CE: how the target and the retain model learn TOFU on the engine (the
    engine is the project's only training loop)."""

    name = "finetune"

    def setup(self, model: nn.Module, optimizer: ObjectiveOptimizer, run: RunState) -> None:
        pass

    def forget_loss(self, model: nn.Module, batch: Any, run: RunState) -> Tensor | None:
        return None

    def retain_loss(self, model: nn.Module, batch: Any, run: RunState) -> Tensor:
        qa = batch["qa"]
        return losses.ce(logits(model, qa), qa["labels"])
