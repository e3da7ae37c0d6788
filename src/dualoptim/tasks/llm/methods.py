"""LLM unlearning methods (SPEC §2.3): a forget loss, optionally paired with a retain loss.

A method is named ``FORGET+RETAIN`` (``"npo+kl"``, ``"ME+GD"``) or ``FORGET`` alone (``"ga"``:
no retain loss). Batches are dicts: ``{"qa": encoding, "index": LongTensor[B]}`` plus
``"idk"`` -- the same questions with refusal answers -- for IDK and DPO (forget) and AP
(retain). An encoding holds ``input_ids``, ``attention_mask`` and ``labels`` (-100 off the
answer). NPO, DPO and KL compare with a reference: a frozen copy of the model as given to
``setup`` (the target, before unlearning), kept in ``run.extras["reference"]``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dualoptim.optim import ObjectiveOptimizer
from dualoptim.tasks.llm import losses
from dualoptim.unlearn import RunState

#: The forget losses, in SPEC order.
FORGET_LOSSES = ("ga", "npo", "simnpo", "dpo", "me", "idk")
#: The retain losses.
RETAIN_LOSSES = ("gd", "kl", "ap")
#: The combinations of the paper (any forget loss, alone or with any retain loss, is accepted).
COMBINATIONS = (
    "ga+gd",
    "ga+kl",
    "npo+gd",
    "npo+kl",
    "simnpo+gd",
    "dpo+gd",
    "me+gd",
    "idk+ap",
    "idk+gd",
)
#: Losses that compare with the frozen reference model.
NEEDS_REFERENCE = frozenset({"npo", "dpo", "kl"})
#: Losses that read the batch's "idk" (refusal) encoding.
NEEDS_REFUSALS = frozenset({"idk", "dpo", "ap"})

REFERENCE = "reference"  # the run.extras key


@dataclass(frozen=True)
class LossOptions:
    """Hyperparameters of the losses (SPEC §2.3 defaults)."""

    npo_beta: float = 0.1
    simnpo_beta: float = 2.5
    simnpo_gamma: float = 0.0
    dpo_beta: float = 0.1
    ap_beta: float = 0.1

    def __post_init__(self) -> None:
        for name in ("npo_beta", "simnpo_beta", "dpo_beta", "ap_beta"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not math.isfinite(self.simnpo_gamma):
            raise ValueError(f"simnpo_gamma must be finite, got {self.simnpo_gamma!r}")


def parse_method(name: str) -> tuple[str, str | None]:
    """``"NPO+KL"`` -> ``("npo", "kl")``; ``"ga"`` -> ``("ga", None)``. Raises ValueError."""
    allowed = (
        f"forget losses {', '.join(FORGET_LOSSES)}; retain losses {', '.join(RETAIN_LOSSES)}; "
        "written FORGET or FORGET+RETAIN"
    )
    parts = [p.strip().lower() for p in str(name).split("+")]
    if len(parts) > 2 or parts[0] not in FORGET_LOSSES:
        raise ValueError(f"unknown LLM method {name!r}: {allowed}")
    if len(parts) == 2 and parts[1] not in RETAIN_LOSSES:
        raise ValueError(f"unknown retain loss {parts[1]!r} in LLM method {name!r}: {allowed}")
    return parts[0], parts[1] if len(parts) == 2 else None


def logits(model: nn.Module, encoding: Mapping[str, Tensor]) -> Tensor:
    """The causal LM's logits on an encoding, in float32, ``[B, T, V]``."""
    return model(
        input_ids=encoding["input_ids"], attention_mask=encoding["attention_mask"]
    ).logits.float()


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with no gradients, on the model's device and dtype."""
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
        p.grad = None
    return reference


class LLMMethod:
    """A TOFU unlearning method: the Method protocol of :mod:`dualoptim.unlearn`.

    ``name`` is the canonical lower-case name (``"npo+kl"``); ``forget``/``retain`` are its
    parts (``retain`` None for a forget loss alone).
    """

    def __init__(self, name: str, options: LossOptions | None = None) -> None:
        self.forget, self.retain = parse_method(name)
        self.name = self.forget if self.retain is None else f"{self.forget}+{self.retain}"
        self.options = LossOptions() if options is None else options
        self._forget_losses: dict[str, Callable[[nn.Module, Any, RunState], Tensor]] = {
            "ga": self._ga,
            "npo": self._npo,
            "simnpo": self._simnpo,
            "dpo": self._dpo,
            "me": self._me,
            "idk": self._idk,
        }
        self._retain_losses: dict[str, Callable[[nn.Module, Any, RunState], Tensor]] = {
            "gd": self._gd,
            "kl": self._kl,
            "ap": self._ap,
        }

    def __repr__(self) -> str:
        return f"LLMMethod({self.name!r}, {self.options!r})"

    # ------------------------------------------------------------------ properties
    @property
    def needs_reference(self) -> bool:
        """NPO, DPO and KL compare with the frozen target."""
        return self.forget in NEEDS_REFERENCE or self.retain in NEEDS_REFERENCE

    @property
    def forget_needs_refusals(self) -> bool:
        """IDK and DPO read the forget batch's "idk" encoding."""
        return self.forget in NEEDS_REFUSALS

    @property
    def retain_needs_refusals(self) -> bool:
        """AP reads the retain batch's "idk" encoding."""
        return self.retain in NEEDS_REFUSALS

    # ------------------------------------------------------------------ protocol
    def setup(self, model: nn.Module, optimizer: ObjectiveOptimizer, run: RunState) -> None:
        """Freeze a copy of the model as given (the target) when a loss needs a reference;
        copy nothing otherwise (an LLM copy doubles the weights' memory)."""
        if self.needs_reference:
            run.extras[REFERENCE] = frozen_copy(model)

    def forget_loss(self, model: nn.Module, batch: Any, run: RunState) -> Tensor | None:
        return self._forget_losses[self.forget](model, batch, run)

    def retain_loss(self, model: nn.Module, batch: Any, run: RunState) -> Tensor | None:
        if self.retain is None:
            return None
        return self._retain_losses[self.retain](model, batch, run)

    # ------------------------------------------------------------------ helpers
    def _encoding(self, batch: Any, key: str, kind: str, loss: str) -> Mapping[str, Tensor]:
        if not isinstance(batch, Mapping):
            raise ValueError(
                f"{self.name}: a {kind} batch must be a dict with a 'qa' encoding, "
                f"got {type(batch).__name__}"
            )
        if key not in batch:
            what = "refusal answers" if key == "idk" else "question-answer pairs"
            raise ValueError(
                f"{self.name}: the {kind} batch has no {key!r} encoding ({what}), which the "
                f"{loss.upper()} {kind} loss needs; it has {sorted(batch)}"
            )
        encoding = batch[key]
        missing = {"input_ids", "attention_mask", "labels"} - set(encoding)
        if missing:
            raise ValueError(
                f"{self.name}: the {kind} batch's {key!r} encoding lacks {sorted(missing)}"
            )
        return encoding

    def _reference(self, run: RunState, device: torch.device) -> nn.Module:
        reference = run.extras.get(REFERENCE)
        if reference is None:
            raise RuntimeError(f"{self.name}: setup() was not run, there is no reference model")
        if next(reference.parameters()).device != device:  # the model moved after setup
            reference = run.extras[REFERENCE] = reference.to(device)
        return reference

    def _nll(self, model: nn.Module, encoding: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        return losses.sequence_nll(logits(model, encoding), encoding["labels"])

    def _ref_nll(self, run: RunState, encoding: Mapping[str, Tensor]) -> Tensor:
        with torch.no_grad():
            reference = self._reference(run, encoding["input_ids"].device)
            return self._nll(reference, encoding)[0]

    # ------------------------------------------------------------------ forget losses
    def _ga(self, model, batch, run):
        qa = self._encoding(batch, "qa", "forget", "ga")
        return -losses.ce(logits(model, qa), qa["labels"])

    def _npo(self, model, batch, run):
        qa = self._encoding(batch, "qa", "forget", "npo")
        nll, _ = self._nll(model, qa)
        return losses.npo(nll, self._ref_nll(run, qa), beta=self.options.npo_beta)

    def _simnpo(self, model, batch, run):
        qa = self._encoding(batch, "qa", "forget", "simnpo")
        nll, lengths = self._nll(model, qa)
        o = self.options
        return losses.simnpo(nll, lengths, beta=o.simnpo_beta, gamma=o.simnpo_gamma)

    def _dpo(self, model, batch, run):
        qa = self._encoding(batch, "qa", "forget", "dpo")
        idk = self._encoding(batch, "idk", "forget", "dpo")
        return losses.dpo(
            self._nll(model, idk)[0],
            self._nll(model, qa)[0],
            self._ref_nll(run, idk),
            self._ref_nll(run, qa),
            beta=self.options.dpo_beta,
        )

    def _me(self, model, batch, run):
        qa = self._encoding(batch, "qa", "forget", "me")
        return losses.maximum_entropy(logits(model, qa), qa["labels"])

    def _idk(self, model, batch, run):
        idk = self._encoding(batch, "idk", "forget", "idk")
        return losses.ce(logits(model, idk), idk["labels"])

    # ------------------------------------------------------------------ retain losses
    def _gd(self, model, batch, run):
        qa = self._encoding(batch, "qa", "retain", "gd")
        return losses.ce(logits(model, qa), qa["labels"])

    def _kl(self, model, batch, run):
        qa = self._encoding(batch, "qa", "retain", "kl")
        reference = self._reference(run, qa["input_ids"].device)
        with torch.no_grad():
            ref_logits = logits(reference, qa)
        return losses.kl_to_reference(logits(model, qa), ref_logits, qa["labels"])

    def _ap(self, model, batch, run):
        qa = self._encoding(batch, "qa", "retain", "ap")
        idk = self._encoding(batch, "idk", "retain", "ap")
        return losses.answer_preservation(
            self._nll(model, idk)[0], self._nll(model, qa)[0], beta=self.options.ap_beta
        )


class FineTune:
    """Retain-only CE: how the target and the retain model learn TOFU on the engine (the
    engine is the project's only training loop)."""

    name = "finetune"

    def setup(self, model: nn.Module, optimizer: ObjectiveOptimizer, run: RunState) -> None:
        pass

    def forget_loss(self, model: nn.Module, batch: Any, run: RunState) -> Tensor | None:
        return None

    def retain_loss(self, model: nn.Module, batch: Any, run: RunState) -> Tensor:
        qa = batch["qa"]
        return losses.ce(logits(model, qa), qa["labels"])
