"""IDK: cross-entropy on refusal answers to the forget questions (SPEC §2.3)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dualoptim.tasks.llm import losses
from dualoptim.tasks.llm.objectives import Context, Objective, register


def idk(ctx: Context, batch: Any) -> Tensor:
    refusals = ctx.encoding(batch, "idk")
    return losses.ce(ctx.logits(refusals), refusals["labels"])


register(Objective("idk", "forget", idk, rank=5, needs_refusals=True))
