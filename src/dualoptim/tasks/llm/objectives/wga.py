"""WGA: weighted gradient ascent (Wang et al., 2025, "Rethinking LLM Unlearning
Objectives: A Gradient Perspective and Go Beyond"). GA's ascent term weighted per token by
the model's own, detached, confidence ``w_t = p_θ(y_t | ·)^β``: tokens already unlikely stop
pushing, so the forget NLL does not run away as under GA. β → 0 gives GA back.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dualoptim.tasks.llm import losses
from dualoptim.tasks.llm.objectives import Context, Objective, register

#: β of the weights (the paper's default); not a config field, so record ids stay unchanged.
BETA = 1.0


def weighted_ascent(logits: Tensor, labels: Tensor, beta: float = BETA) -> Tensor:
    """``L = −Σ_{i,t} w_{i,t}·nll[i, t] / #answer tokens`` with ``w = exp(−nll)^β`` detached
    (:mod:`~dualoptim.tasks.llm.losses` conventions: shifted, float32, 0 without answers)."""
    nll = losses.token_nll(logits, labels)
    weights = (-beta * nll).exp().detach()
    count = (labels[:, 1:] != losses.IGNORE).sum().clamp_min(1)
    return -(weights * nll).sum() / count


def wga(ctx: Context, batch: Any) -> Tensor:
    qa = ctx.encoding(batch, "qa")
    return weighted_ascent(ctx.logits(qa), qa["labels"])


register(Objective("wga", "forget", wga, rank=6))
