"""What :class:`~dualoptim.integrations.hf_trainer.DualOptimTrainer` refuses, and why.

Each check fails early, before any training, with a message that names the argument and says
what to do instead: Trainer features that would silently do the wrong thing with paired
forget/retain items or with dualoptim's optimizer are refused rather than ignored.
"""

from __future__ import annotations

import math
from collections.abc import Set
from typing import Any

from transformers import Trainer

from dualoptim.optim import ObjectiveOptimizer

#: Trainer arguments with no meaning here, and what to pass instead.
_REFUSED_KWARGS = (
    ("train_dataset", "it is ambiguous; pass forget_dataset= and retain_dataset="),
    ("model_init", "pass a model (the optimizer and method setup need it up front)"),
    (
        "optimizer_cls_and_kwargs",
        "pass forget_optimizer= / retain_optimizer= (and setting=) instead",
    ),
)


def pop_refused_kwargs(kwargs: dict[str, Any]) -> None:
    """Refuses the Trainer arguments that have no meaning here; drops those passed as None."""
    for name, why in _REFUSED_KWARGS:
        if kwargs.get(name) is not None:
            raise ValueError(f"DualOptimTrainer does not take {name}: {why}")
        kwargs.pop(name, None)


def check_counts_and_weights(
    forget_steps: Any, retain_steps: Any, forget_weight: Any, retain_weight: Any
) -> None:
    """Step counts per cycle are ints (not None: the Trainer has no passes over one side);
    loss weights are finite."""
    for name, steps in (("forget_steps", forget_steps), ("retain_steps", retain_steps)):
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise TypeError(f"{name} must be an int (optimizer steps per cycle), got {steps!r}")
    for name, weight in (("forget_weight", forget_weight), ("retain_weight", retain_weight)):
        if not math.isfinite(float(weight)):
            raise ValueError(f"{name} must be finite, got {weight!r}")


def check_datasets(needed: Set[str], forget: Any | None, retain: Any | None) -> None:
    """Every side the schedule steps on has its data set."""
    for name, data in (("forget", forget), ("retain", retain)):
        if name in needed and data is None:
            raise ValueError(f"the schedule makes {name} steps but {name}_dataset is None")


def prebuilt_optimizer(kwargs: dict[str, Any]) -> ObjectiveOptimizer | None:
    """The optimizer of ``optimizers=(optimizer, scheduler)``, which must be dualoptim's."""
    optimizer = kwargs.get("optimizers", (None, None))[0]
    if optimizer is not None and not isinstance(optimizer, ObjectiveOptimizer):
        raise TypeError(
            "optimizers[0] must be a dualoptim ObjectiveOptimizer (e.g. from build_optimizer); "
            f"got {type(optimizer).__name__}. Or let DualOptimTrainer build it."
        )
    return optimizer


def check_trainer_setup(trainer: Trainer) -> None:
    """After ``Trainer.__init__``: no parameter sharding, and no TrainingArguments feature
    that reads dict items (the training items are forget/retain pairs)."""
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        raise ValueError(
            "DualOptimTrainer supports single-device and DDP training; the Trainer's DeepSpeed "
            "and FSDP paths step and checkpoint the optimizer in ways not tested with its "
            "phases. For FSDP2, run dualoptim's engine (docs/engine.md, 'FSDP2')"
        )
    strategy = str(getattr(trainer.args, "train_sampling_strategy", "random"))
    if strategy in ("group_by_length", "batch_rebalance"):
        raise ValueError(
            f"train_sampling_strategy={strategy!r} reads lengths from dict items; the "
            "training items here are forget/retain pairs -- use 'random' or 'sequential'"
        )
    if str(trainer.args.include_num_input_tokens_seen) != "no":
        raise ValueError(
            "include_num_input_tokens_seen is not supported: a paired forget/retain batch "
            "has no top-level input_ids"
        )
