"""NPO: negative preference optimisation against the frozen target (SPEC §2.3)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dualoptim.tasks.llm import losses
from dualoptim.tasks.llm.objectives import Context, Objective, register


def npo(ctx: Context, batch: Any) -> Tensor:
    qa = ctx.encoding(batch, "qa")
    nll, _ = ctx.nll(qa)
    return losses.npo(nll, ctx.ref_nll(qa), beta=ctx.options.npo_beta)


register(Objective("npo", "forget", npo, rank=1, needs_reference=True, joint_forget_weight=0.1))
