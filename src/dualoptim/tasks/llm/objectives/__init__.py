"""The LLM losses' registry: one module per loss in this package registers an ``Objective``
-- its side (forget or retain), how it reads a batch, what it needs (the frozen reference,
refusal answers) and its defaults -- so adding a loss is one file, with no table elsewhere.
``LLMMethod`` pairs a forget and a retain objective by name (``"npo+kl"``).

Every module of this package is imported on the first lookup, so a new file registers
itself without being listed anywhere; a loss defined outside it registers on import.
The tensor maths lives in :mod:`dualoptim.tasks.llm.losses`; a module here says which
encodings and models feed it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from dualoptim.registry import Registry
from dualoptim.tasks.llm import losses

if TYPE_CHECKING:
    from dualoptim.tasks.llm.methods import LossOptions
    from dualoptim.unlearn import RunState

Side = Literal["forget", "retain"]
REFERENCE = "reference"  # the run.extras key of the frozen reference model


def logits(model: nn.Module, encoding: Mapping[str, Tensor]) -> Tensor:
    """The causal LM's logits on an encoding, in float32, ``[B, T, V]``."""
    return model(
        input_ids=encoding["input_ids"], attention_mask=encoding["attention_mask"]
    ).logits.float()


@dataclass(frozen=True)
class Context:
    """What a loss sees besides its batch: the model, the run (its frozen reference), the
    loss options, and the method and side for error messages."""

    model: nn.Module
    run: RunState
    options: LossOptions
    method: str
    side: Side
    loss: str

    def encoding(self, batch: Any, key: str) -> Mapping[str, Tensor]:
        """The batch's ``key`` encoding ("qa" or "idk"); a clear error when it is missing."""
        kind = self.side
        if not isinstance(batch, Mapping):
            raise ValueError(
                f"{self.method}: a {kind} batch must be a dict with a 'qa' encoding, "
                f"got {type(batch).__name__}"
            )
        if key not in batch:
            what = "refusal answers" if key == "idk" else "question-answer pairs"
            raise ValueError(
                f"{self.method}: the {kind} batch has no {key!r} encoding ({what}), which the "
                f"{self.loss.upper()} {kind} loss needs; it has {sorted(batch)}"
            )
        encoding = batch[key]
        missing = {"input_ids", "attention_mask", "labels"} - set(encoding)
        if missing:
            raise ValueError(
                f"{self.method}: the {kind} batch's {key!r} encoding lacks {sorted(missing)}"
            )
        return encoding

    def logits(self, encoding: Mapping[str, Tensor]) -> Tensor:
        return logits(self.model, encoding)

    def nll(self, encoding: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Summed NLL per sequence and its answer-token count, under the model."""
        return losses.sequence_nll(self.logits(encoding), encoding["labels"])

    def reference(self, device: torch.device) -> nn.Module:
        """The frozen target that ``setup`` stored, moved to ``device`` if the model moved."""
        reference = self.run.extras.get(REFERENCE)
        if reference is None:
            raise RuntimeError(f"{self.method}: setup() was not run, there is no reference model")
        if next(reference.parameters()).device != device:  # the model moved after setup
            reference = self.run.extras[REFERENCE] = reference.to(device)
        return reference

    def ref_logits(self, encoding: Mapping[str, Tensor]) -> Tensor:
        with torch.no_grad():
            return logits(self.reference(encoding["input_ids"].device), encoding)

    def ref_nll(self, encoding: Mapping[str, Tensor]) -> Tensor:
        """Summed NLL per sequence under the frozen reference (no gradient)."""
        return losses.sequence_nll(self.ref_logits(encoding), encoding["labels"])[0]


@dataclass(frozen=True)
class Objective:
    """One forget or retain loss as the LLM task runs it.

    ``rank`` orders the listing (SPEC §2.3's order; new losses after). ``joint_forget_weight``
    is a forget loss's default c_f under Joint (SPEC §1.3: 0.1 for ME, NPO and DPO) and
    ``forget_lr`` its default η_f; a config's ``forget_weight``/``forget_lr`` override both.
    """

    name: str
    side: Side
    loss: Callable[[Context, Any], Tensor]
    rank: int
    needs_reference: bool = False
    needs_refusals: bool = False
    joint_forget_weight: float = 1.0
    forget_lr: float = 1e-5


REGISTRY: Registry[Objective] = Registry("LLM loss", __name__)
register = REGISTRY.register


def names(side: Side) -> tuple[str, ...]:
    """The registered losses of one side, in rank order."""
    chosen = (o for o in REGISTRY.values() if o.side == side)
    return tuple(o.name for o in sorted(chosen, key=lambda o: (o.rank, o.name)))


def get(name: str, side: Side) -> Objective | None:
    """The ``side`` loss registered as ``name``, or None (the caller words the error)."""
    objective = REGISTRY.find(name)
    return objective if objective is not None and objective.side == side else None
