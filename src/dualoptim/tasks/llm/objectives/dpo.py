"""DPO with a refusal as the chosen answer and the true answer as the rejected one (SPEC
§2.3); its default η_f is 1.5e-5 (SPEC §1.3)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dualoptim.tasks.llm import losses
from dualoptim.tasks.llm.objectives import Context, Objective, register


def dpo(ctx: Context, batch: Any) -> Tensor:
    qa = ctx.encoding(batch, "qa")
    idk = ctx.encoding(batch, "idk")
    return losses.dpo(
        ctx.nll(idk)[0],
        ctx.nll(qa)[0],
        ctx.ref_nll(idk),
        ctx.ref_nll(qa),
        beta=ctx.options.dpo_beta,
    )


register(
    Objective(
        "dpo",
        "forget",
        dpo,
        rank=3,
        needs_reference=True,
        needs_refusals=True,
        joint_forget_weight=0.1,
        forget_lr=1.5e-5,
    )
)
