"""The optimizer of :class:`~dualoptim.integrations.hf_trainer.DualOptimTrainer`.

The specs of both sides (SPEC's LLM recipe, with the fields set in ``TrainingArguments``
winning), the parameter groups (the Trainer's weight-decay rule; fp32 embedding states for
the 8-bit settings, SPEC §1.5) and DualOptimPlus' options, built with
:func:`~dualoptim.optim.settings.build_optimizer`. Each group's ``lr`` is a factor (1.0) that
the Trainer's LR scheduler drives; each objective keeps its own step size.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn
from transformers import TrainingArguments

from dualoptim.optim import ObjectiveOptimizer, OptimizerSpec
from dualoptim.optim.dual import SpecLike
from dualoptim.optim.settings import Setting, build_optimizer

logger = logging.getLogger(__name__)

#: SPEC §1.3, LLM (TOFU) row: AdamW on both sides.
RECIPE_LR = 1e-5
RECIPE_BETAS = (0.9, 0.95)
RECIPE_EPS = 1e-8
RECIPE_WEIGHT_DECAY = 0.01
#: TrainingArguments fields read by :func:`recipe_optimizer`, with the recipe's value of each.
_RECIPE_FIELDS = {
    "learning_rate": RECIPE_LR,
    "adam_beta1": RECIPE_BETAS[0],
    "adam_beta2": RECIPE_BETAS[1],
    "adam_epsilon": RECIPE_EPS,
    "weight_decay": RECIPE_WEIGHT_DECAY,
}
_ADAM_TYPES = frozenset({"adamw", "adam", "adamw8bit", "adam8bit"})


def _training_args_default(name: str) -> Any:
    return {f.name: f.default for f in dataclasses.fields(TrainingArguments)}[name]


def recipe_values(args: TrainingArguments | None) -> tuple[dict[str, Any], list[str]]:
    """The AdamW hyperparameters of the recipe, with those set in ``args`` taking precedence.

    A field "is set" when it differs from TrainingArguments' default (5e-5 for
    ``learning_rate``); a field at its default takes the recipe's value. Returns the values and
    the names of the fields whose recipe value replaced a different TrainingArguments default.
    """
    values: dict[str, Any] = {}
    replaced: list[str] = []
    for name, recipe in _RECIPE_FIELDS.items():
        default = _training_args_default(name)
        value = recipe if args is None else getattr(args, name)
        if args is not None and value == default:
            value = recipe
            if recipe != default:
                replaced.append(name)
        values[name] = float(value)
    return values, replaced


def recipe_optimizer(args: TrainingArguments | None = None) -> OptimizerSpec:
    """The optimizer each side gets when none is passed: SPEC's LLM recipe, AdamW with
    η = 1e-5, betas (0.9, 0.95), eps 1e-8, weight decay 0.01 -- except for the fields set in
    ``args`` (``learning_rate``, ``adam_beta1``, ``adam_beta2``, ``adam_epsilon``,
    ``weight_decay``), which win. See :func:`recipe_values` for what "set" means."""
    v, _ = recipe_values(args)
    return OptimizerSpec(
        "adamw",
        {
            "lr": v["learning_rate"],
            "betas": (v["adam_beta1"], v["adam_beta2"]),
            "eps": v["adam_epsilon"],
            "weight_decay": v["weight_decay"],
        },
    )


def resolve_specs(
    given: Mapping[str, SpecLike | None], args: TrainingArguments
) -> dict[str, OptimizerSpec]:
    """Each side's spec: the one given, else :func:`recipe_optimizer` ``(args)``. Warns when
    the recipe silently replaced a TrainingArguments default, so the user can choose."""
    specs = {
        side: recipe_optimizer(args) if spec is None else OptimizerSpec.parse(spec)
        for side, spec in given.items()
    }
    if any(spec is None for spec in given.values()):
        _, replaced = recipe_values(args)
        if replaced:
            logger.warning(
                "DualOptimTrainer: TrainingArguments leaves %s at the Trainer's default; the "
                "DualOptim LLM recipe's value is used instead (%s). Set it in "
                "TrainingArguments, or pass forget_optimizer/retain_optimizer, to choose.",
                ", ".join(replaced),
                ", ".join(f"{name}={_RECIPE_FIELDS[name]:g}" for name in replaced),
            )
    return specs


def parameter_groups(
    model: nn.Module, decay_names: Iterable[str], *, fp32_embeddings: bool
) -> list[dict[str, Any]]:
    """Parameter groups: weight decay on ``decay_names``, none on the rest (biases and norm
    weights). With ``fp32_embeddings`` the decayed embeddings get a group with fp32 states."""
    decay_names = set(decay_names)
    fp32_ids = set()
    if fp32_embeddings:
        fp32_ids = {
            id(p)
            for m in model.modules()
            if isinstance(m, nn.Embedding)
            for p in m.parameters(recurse=False)
        }
    decay, decay_fp32, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name not in decay_names:
            no_decay.append(p)
        elif id(p) in fp32_ids:
            decay_fp32.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay},
        {"params": decay_fp32, "state_bits": 32},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def plus_options(
    setting: Setting, plus: Mapping[str, Any] | None, retain: OptimizerSpec
) -> Mapping[str, Any] | None:
    """DualOptimPlus' options: ``plus``, with ``retain_lr``, ``betas`` and ``eps`` defaulting
    to an Adam-type retain optimizer's (DO+ is Adam-type: same scale and betas)."""
    if not setting.plus:
        return plus
    options = dict(plus or {})
    if retain.name.lower() in _ADAM_TYPES:
        options.setdefault("retain_lr", retain.lr)
        if "betas" in retain.kwargs:
            options.setdefault("betas", tuple(retain.kwargs["betas"]))
        if "eps" in retain.kwargs:
            options.setdefault("eps", retain.kwargs["eps"])
    return options


def build_trainer_optimizer(
    setting: Setting,
    model: nn.Module,
    groups: list[dict[str, Any]],
    specs: Mapping[str, SpecLike | None],
    args: TrainingArguments,
    *,
    plus: Mapping[str, Any] | None,
    per_phase_lr: bool,
) -> ObjectiveOptimizer:
    """The dualoptim optimizer of ``setting`` over ``groups`` of ``model``'s parameters;
    ``specs`` are the sides' optimizers as passed (None: the recipe under ``args``)."""
    resolved = resolve_specs(specs, args)
    optimizer = build_optimizer(
        setting.name,
        groups,
        forget=resolved["forget"],
        retain=resolved["retain"],
        plus=plus_options(setting, plus, resolved["retain"]),
        per_phase_lr=per_phase_lr,
    )
    if setting.eight_bit and not setting.plus:
        _keep_embeddings_fp32_in_bitsandbytes(model)
    return optimizer


def _keep_embeddings_fp32_in_bitsandbytes(model: nn.Module) -> None:
    """bitsandbytes' 8-bit optimizers keep embeddings' states in 32 bit (SPEC §1.5), as the
    Trainer does for its own bitsandbytes optimizers."""
    import bitsandbytes  # the 'bnb' extra; build_optimizer fails clearly without it

    manager = bitsandbytes.optim.GlobalOptimManager.get_instance()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            manager.register_module_override(module, "weight", {"optim_bits": 32})
