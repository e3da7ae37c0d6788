"""ME: maximum entropy, KL(uniform ‖ p_θ) on the forget answers (SPEC §2.3)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dualoptim.tasks.llm import losses
from dualoptim.tasks.llm.objectives import Context, Objective, register


def me(ctx: Context, batch: Any) -> Tensor:
    qa = ctx.encoding(batch, "qa")
    return losses.maximum_entropy(ctx.logits(qa), qa["labels"])


register(Objective("me", "forget", me, rank=4, joint_forget_weight=0.1))
