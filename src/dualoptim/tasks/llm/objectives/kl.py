"""KL: the retain answers' distribution kept close to the frozen target's (SPEC §2.3)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dualoptim.tasks.llm import losses
from dualoptim.tasks.llm.objectives import Context, Objective, register


def kl(ctx: Context, batch: Any) -> Tensor:
    qa = ctx.encoding(batch, "qa")
    ref_logits = ctx.ref_logits(qa)
    return losses.kl_to_reference(ctx.logits(qa), ref_logits, qa["labels"])


register(Objective("kl", "retain", kl, rank=1, needs_reference=True))
