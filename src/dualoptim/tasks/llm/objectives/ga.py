"""GA: gradient ascent on the forget answers, ``−CE`` (SPEC §2.3)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dualoptim.tasks.llm import losses
from dualoptim.tasks.llm.objectives import Context, Objective, register


def ga(ctx: Context, batch: Any) -> Tensor:
    qa = ctx.encoding(batch, "qa")
    return -losses.ce(ctx.logits(qa), qa["labels"])


register(Objective("ga", "forget", ga, rank=0))
