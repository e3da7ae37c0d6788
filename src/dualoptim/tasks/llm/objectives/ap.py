"""AP: answer preservation, the true retain answer kept likelier than a refusal (SPEC §2.3)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dualoptim.tasks.llm import losses
from dualoptim.tasks.llm.objectives import Context, Objective, register


def ap(ctx: Context, batch: Any) -> Tensor:
    qa = ctx.encoding(batch, "qa")
    idk = ctx.encoding(batch, "idk")
    return losses.answer_preservation(ctx.nll(idk)[0], ctx.nll(qa)[0], beta=ctx.options.ap_beta)


register(Objective("ap", "retain", ap, rank=2, needs_refusals=True))
