"""SimNPO: reference-free, length-normalised NPO (SPEC §2.3)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dualoptim.tasks.llm import losses
from dualoptim.tasks.llm.objectives import Context, Objective, register


def simnpo(ctx: Context, batch: Any) -> Tensor:
    qa = ctx.encoding(batch, "qa")
    nll, lengths = ctx.nll(qa)
    o = ctx.options
    return losses.simnpo(nll, lengths, beta=o.simnpo_beta, gamma=o.simnpo_gamma)


register(Objective("simnpo", "forget", simnpo, rank=2))
