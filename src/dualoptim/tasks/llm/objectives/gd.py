"""GD: cross-entropy on the retain answers (SPEC §2.3)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dualoptim.tasks.llm import losses
from dualoptim.tasks.llm.objectives import Context, Objective, register


def gd(ctx: Context, batch: Any) -> Tensor:
    qa = ctx.encoding(batch, "qa")
    return losses.ce(ctx.logits(qa), qa["labels"])


register(Objective("gd", "retain", gd, rank=0))
