"""DualOptim inside the Hugging Face ``Trainer``: :class:`DualOptimTrainer`.

For LLM users whose unlearning script is a ``transformers.Trainer``. The adapter reuses the
project's optimizer (:func:`~dualoptim.optim.settings.build_optimizer`) and phase logic
(:class:`~dualoptim.unlearn.schedule.Schedule`, :func:`~dualoptim.unlearn.schedule.objective_at`)
and the :class:`~dualoptim.unlearn.method.Method` protocol; the Trainer keeps its own loop,
data loading, LR scheduler, clipping, logging, checkpoints and resume.

* **Data.** The training set is a :class:`PairedDataset`: item ``i`` is
  ``(forget[i % n_f], retain[i % n_r])``, as long as the longer set (the shorter cycles). Every
  micro-batch thus carries a forget batch and a retain batch; an alternating step uses the half
  of its phase, a joint step both. ``train_dataset`` is refused (it is ambiguous).
* **Phases.** The objective of an optimizer step is a pure function of
  ``state.global_step`` (the cycle of ``forget_steps`` forget steps, then ``retain_steps``
  retain steps, repeated): every micro-batch of a step is of one kind, every process agrees,
  and a resumed run continues the cycle where it stopped.
* **Optimizer.** ``create_optimizer`` builds the dualoptim optimizer of ``setting`` over two
  parameter groups (weight decay / none on biases and norm weights). Each group's ``lr`` is a
  factor (1.0) that the Trainer's LR scheduler drives; each objective keeps its own step size
  (see :mod:`dualoptim.optim.objective`). ``max_grad_norm`` clips both phases.

Docs: docs/hf_trainer.md.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from dualoptim.optim import Objective, ObjectiveOptimizer, OptimizerSpec
from dualoptim.optim.dual import SpecLike
from dualoptim.optim.settings import build_optimizer, check_setting, is_joint
from dualoptim.unlearn.method import Method, RunState
from dualoptim.unlearn.schedule import Schedule, objective_at

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


# ---------------------------------------------------------------------------------- optimizer
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


# ---------------------------------------------------------------------------------- data
class ForgetRetainPair(NamedTuple):
    """One training item: a forget example and a retain example (either may be None when its
    set is absent). Not a dict, so the Trainer's column removal leaves it alone."""

    forget: Any
    retain: Any


class PairedBatch(dict):
    """A collated training micro-batch: ``{"forget": batch or None, "retain": batch or None}``.

    Its own type so that :meth:`DualOptimTrainer.compute_loss` tells it from an ordinary
    (evaluation) batch; the Trainer and accelerate keep a mapping's type when they move it
    to the device.
    """


class PairedDataset(Dataset):
    """Item ``i`` = ``(forget[i % n_f], retain[i % n_r])``; length = the longer set's.

    The shorter set cycles deterministically; with the Trainer's shuffling sampler every epoch
    sees each example of the longer set once and each of the shorter set about
    ``n_long / n_short`` times. A set may be None (a run that never uses it).
    """

    def __init__(self, forget: Any | None, retain: Any | None) -> None:
        self.forget, self.retain = forget, retain
        sizes = {}
        for name, data in (("forget", forget), ("retain", retain)):
            if data is None:
                continue
            if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
                raise TypeError(
                    f"the {name} dataset must be a map-style dataset (__len__ and "
                    f"__getitem__), got {type(data).__name__}"
                )
            if len(data) == 0:
                raise ValueError(f"the {name} dataset is empty")
            sizes[name] = len(data)
        if not sizes:
            raise ValueError("PairedDataset needs a forget or a retain dataset")
        self.sizes = sizes
        self._length = max(sizes.values())

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> ForgetRetainPair:
        if not -self._length <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} pairs")
        index %= self._length
        f = None if self.forget is None else self.forget[index % self.sizes["forget"]]
        r = None if self.retain is None else self.retain[index % self.sizes["retain"]]
        return ForgetRetainPair(f, r)


class PairCollator:
    """Collates pairs with one collator per side; anything else (evaluation batches) with
    ``fallback``."""

    def __init__(
        self,
        forget: Callable[[list[Any]], Any],
        retain: Callable[[list[Any]], Any],
        fallback: Callable[[list[Any]], Any],
    ) -> None:
        self.forget, self.retain, self.fallback = forget, retain, fallback

    def __call__(self, features: list[Any]) -> Any:
        if not features or not isinstance(features[0], ForgetRetainPair):
            return self.fallback(features)
        batch = PairedBatch()
        for name, collate in (("forget", self.forget), ("retain", self.retain)):
            items = [getattr(f, name) for f in features]
            batch[name] = None if items[0] is None else collate(items)
        return batch


# ---------------------------------------------------------------------------------- trainer
class DualOptimTrainer(Trainer):
    """A ``transformers.Trainer`` that unlearns with DualOptim (or a baseline setting).

    Args:
        model, args: as for ``Trainer``. ``args.learning_rate`` (and the Adam fields) set the
            default optimizers' hyperparameters when set; see :func:`recipe_optimizer`.
        method: the unlearning method -- ``forget_loss(model, batch, run)``,
            ``retain_loss(model, batch, run)`` and optional ``setup(model, optimizer, run)``
            (:class:`~dualoptim.unlearn.method.Method`). A loss receives the collated batch of
            its side (moved to the device) and the model as the Trainer wraps it.
        forget_dataset, retain_dataset: map-style datasets of examples. Either may be None
            when the schedule never uses it (e.g. ``retain_steps=0``).
        setting: ``"dual"`` (default), ``"dual_8bit"``, ``"dual_plus"``, ``"dual_plus_8bit"``,
            ``"alternate"`` or ``"joint"`` (:mod:`dualoptim.optim.settings`).
        forget_optimizer, retain_optimizer: Optim_f and Optim_r as an ``OptimizerSpec``, a
            config dict ``{"name": "adamw", "lr": ...}`` or a ``functools.partial``; their
            ``lr`` is the absolute step size. Default: :func:`recipe_optimizer` ``(args)``.
            The shared settings (joint, alternate) use ``retain_optimizer``.
        forget_steps, retain_steps: optimizer steps of each kind per cycle (default 1 : 5,
            the TOFU recipe). Joint: every step is a joint step.
        forget_weight, retain_weight: c_f, c_r -- each loss is multiplied by its weight (in
            every setting; joint minimises c_f·L_f + c_r·L_r).
        plus: DualOptimPlus options for the dual_plus settings. ``retain_lr`` defaults to
            the retain optimizer's lr and ``betas``/``eps`` to its values when it is Adam-type.
        per_phase_lr: alternate only -- forget steps use ``forget_optimizer``'s lr.
        forget_collator, retain_collator: collate a list of examples of each side; default
            the Trainer's ``data_collator`` (yours, or the Trainer's default).
        **kwargs: passed to ``Trainer`` (``data_collator``, ``eval_dataset``,
            ``processing_class``, ``callbacks``, ``optimizers``, ...). ``train_dataset``,
            ``model_init`` and ``optimizer_cls_and_kwargs`` are refused.
    """

    # compute_loss returns per-micro-batch means; the Trainer divides them by the number of
    # accumulated micro-batches.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | None = None,
        *,
        method: Method,
        forget_dataset: Any | None,
        retain_dataset: Any | None,
        setting: str = "dual",
        forget_optimizer: SpecLike | None = None,
        retain_optimizer: SpecLike | None = None,
        forget_steps: int = 1,
        retain_steps: int = 5,
        forget_weight: float = 1.0,
        retain_weight: float = 1.0,
        plus: Mapping[str, Any] | None = None,
        per_phase_lr: bool = False,
        forget_collator: Callable[[list[Any]], Any] | None = None,
        retain_collator: Callable[[list[Any]], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        for name, why in (
            ("train_dataset", "it is ambiguous; pass forget_dataset= and retain_dataset="),
            ("model_init", "pass a model (the optimizer and method setup need it up front)"),
            (
                "optimizer_cls_and_kwargs",
                "pass forget_optimizer= / retain_optimizer= (and setting=) instead",
            ),
        ):
            if kwargs.get(name) is not None:
                raise ValueError(f"DualOptimTrainer does not take {name}: {why}")
            kwargs.pop(name, None)
        self.setting = check_setting(setting)
        self.joint = is_joint(setting)
        for name, steps in (("forget_steps", forget_steps), ("retain_steps", retain_steps)):
            if isinstance(steps, bool) or not isinstance(steps, int):
                raise TypeError(f"{name} must be an int (optimizer steps per cycle), got {steps!r}")
        for name, weight in (("forget_weight", forget_weight), ("retain_weight", retain_weight)):
            if not math.isfinite(float(weight)):
                raise ValueError(f"{name} must be finite, got {weight!r}")
        if self.joint and forget_steps < 1:
            raise ValueError(
                "the joint setting makes forget_steps joint steps per cycle; need >= 1"
            )
        self.schedule = Schedule(1, forget_steps, retain_steps)
        #: One cycle as (objective, optimizer steps); objective None = a joint step.
        self.phases = self.schedule.cycle(0, 0, joint=self.joint)
        needed = {"forget", "retain"} if self.joint else {o for o, _ in self.phases}
        for name, data in (("forget", forget_dataset), ("retain", retain_dataset)):
            if name in needed and data is None:
                raise ValueError(f"the schedule makes {name} steps but {name}_dataset is None")
        optimizer = kwargs.get("optimizers", (None, None))[0]
        if optimizer is not None and not isinstance(optimizer, ObjectiveOptimizer):
            raise TypeError(
                "optimizers[0] must be a dualoptim ObjectiveOptimizer (e.g. from build_optimizer); "
                f"got {type(optimizer).__name__}. Or let DualOptimTrainer build it."
            )
        train_dataset = PairedDataset(forget_dataset, retain_dataset)  # checks empty sets

        super().__init__(model, args, **kwargs)

        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(
                "DualOptimTrainer supports single-device and DDP training; DeepSpeed and FSDP "
                "shard parameters that dualoptim's inner optimizers would not see (docs/engine.md)"
            )
        strategy = str(getattr(self.args, "train_sampling_strategy", "random"))
        if strategy in ("group_by_length", "batch_rebalance"):
            raise ValueError(
                f"train_sampling_strategy={strategy!r} reads lengths from dict items; the "
                "training items here are forget/retain pairs -- use 'random' or 'sequential'"
            )
        if str(self.args.include_num_input_tokens_seen) != "no":
            raise ValueError(
                "include_num_input_tokens_seen is not supported: a paired forget/retain batch "
                "has no top-level input_ids"
            )
        self.method = method
        self.forget_weight, self.retain_weight = float(forget_weight), float(retain_weight)
        self.plus = dict(plus) if plus is not None else None
        self.per_phase_lr = per_phase_lr
        self._specs = {"forget": forget_optimizer, "retain": retain_optimizer}
        self.train_dataset = train_dataset
        fallback = self.data_collator
        self.data_collator = PairCollator(
            forget_collator or fallback, retain_collator or fallback, fallback
        )
        self._objective_optimizer: ObjectiveOptimizer | None = optimizer
        #: Where the run is; methods read it (``run.progress``, ``run.phase``, ``run.extras``).
        self.run = RunState(total_steps=max(self.args.max_steps, 0))
        self._method_ready = False
        self._step_losses: dict[str, Tensor] = {}
        self._phase_loss_sums: dict[str, Tensor] = {}
        self._phase_step_counts: dict[str, int] = {"forget": 0, "retain": 0}

    # ------------------------------------------------------------------ phases
    def objective_at(self, step: int) -> Objective | None:
        """The objective of optimizer step ``step`` (0-based); None = a joint step."""
        return objective_at(self.phases, step)

    @property
    def objective_optimizer(self) -> ObjectiveOptimizer | None:
        """The dualoptim optimizer itself (``self.optimizer`` is accelerate's wrapper)."""
        return self._objective_optimizer

    def _sync_run(self, objective: Objective | None) -> None:
        step = self.state.global_step
        period = sum(n for _, n in self.phases)
        self.run.step, self.run.cycle, self.run.phase = step, step // period, objective
        if self.state.max_steps and self.state.max_steps > 0:
            self.run.total_steps = self.state.max_steps

    # ------------------------------------------------------------------ optimizer
    def optimizer_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Parameter groups: weight decay, and none on biases and norm weights (the Trainer's
        own rule, ``get_decay_parameter_names``). With ``dual_plus_8bit`` embeddings get a group
        with fp32 states (SPEC §1.5)."""
        decay_names = set(self.get_decay_parameter_names(model))
        fp32_ids = set()
        if self.setting == "dual_plus_8bit":
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

    def _resolved_specs(self) -> dict[str, OptimizerSpec]:
        specs = {}
        for side, given in self._specs.items():
            specs[side] = (
                recipe_optimizer(self.args) if given is None else OptimizerSpec.parse(given)
            )
        if any(given is None for given in self._specs.values()):
            _, replaced = recipe_values(self.args)
            if replaced:
                logger.warning(
                    "DualOptimTrainer: TrainingArguments leaves %s at the Trainer's default; the "
                    "DualOptim LLM recipe's value is used instead (%s). Set it in "
                    "TrainingArguments, or pass forget_optimizer/retain_optimizer, to choose.",
                    ", ".join(replaced),
                    ", ".join(f"{name}={_RECIPE_FIELDS[name]:g}" for name in replaced),
                )
        return specs

    def _plus_options(self, retain: OptimizerSpec) -> dict[str, Any] | None:
        if not self.setting.startswith("dual_plus"):
            return self.plus
        options = dict(self.plus or {})
        if retain.name.lower() in _ADAM_TYPES:  # DO+ is Adam-type: same scale and betas
            options.setdefault("retain_lr", retain.lr)
            if "betas" in retain.kwargs:
                options.setdefault("betas", tuple(retain.kwargs["betas"]))
            if "eps" in retain.kwargs:
                options.setdefault("eps", retain.kwargs["eps"])
        return options

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Build the dualoptim optimizer of ``setting`` (once); the Trainer's LR scheduler then
        drives every group's ``lr`` factor."""
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            specs = self._resolved_specs()
            groups = self.optimizer_groups(opt_model)
            optimizer = build_optimizer(
                self.setting,
                groups,
                forget=specs["forget"],
                retain=specs["retain"],
                plus=self._plus_options(specs["retain"]),
                per_phase_lr=self.per_phase_lr,
            )
            if self.setting == "dual_8bit":
                _keep_embeddings_fp32_in_bitsandbytes(opt_model)
            self.optimizer = self._objective_optimizer = optimizer
        return self.optimizer

    # ------------------------------------------------------------------ training
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
        """``Trainer.train`` after the method's one-time setup.

        ``method.setup`` runs here, on the model as given -- before a checkpoint is loaded --
        so that a frozen reference or teacher it copies is the original model, as in the
        engine. A resumed run gets its masks back with the optimizer state.
        """
        if not self._method_ready:
            self.create_optimizer()
            setup = getattr(self.method, "setup", None)
            if setup is not None:
                assert self._objective_optimizer is not None
                setup(
                    self.accelerator.unwrap_model(self.model), self._objective_optimizer, self.run
                )
            self._method_ready = True
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def training_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor:
        """One micro-batch of the phase of ``state.global_step``.

        Sets the optimizer's objective before the Trainer steps it, and on the micro-batch that
        completes a forget step masks the forget gradient before the Trainer clips it (SFR-on
        clips the masked gradient; a mask of the retain objective applies inside its step).
        """
        if not isinstance(inputs, PairedBatch):
            return super().training_step(model, inputs, num_items_in_batch)
        optimizer = self._objective_optimizer
        if optimizer is None:
            raise RuntimeError("DualOptimTrainer.training_step before create_optimizer()")
        objective = self.objective_at(self.state.global_step)
        self._sync_run(objective)
        optimizer.objective = objective or "retain"
        loss = super().training_step(model, inputs, num_items_in_batch)
        micro_batches = max(getattr(self, "current_gradient_accumulation_steps", 1), 1)
        for kind, value in self._step_losses.items():
            total = self._phase_loss_sums.get(kind)
            part = value / micro_batches
            self._phase_loss_sums[kind] = part if total is None else total + part
        self._step_losses = {}
        if self.accelerator.sync_gradients:  # the last micro-batch of this optimizer step
            for kind in ("forget", "retain") if objective is None else (objective,):
                self._phase_step_counts[kind] += 1
            if objective == "forget":
                optimizer.mask_gradients("forget")
        return loss

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """The loss of the current phase on a paired batch: c_f·L_f on a forget step, c_r·L_r
        on a retain step, c_f·L_f + c_r·L_r on a joint step. Other batches (evaluation): the
        Trainer's own loss."""
        if not isinstance(inputs, PairedBatch):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if return_outputs:
            raise ValueError("paired forget/retain batches have no single model output")
        objective = self.objective_at(self.state.global_step)
        kinds: tuple[Objective, ...] = ("forget", "retain") if objective is None else (objective,)
        total: Tensor | None = None
        for kind in kinds:
            loss = self._method_loss(kind, model, inputs[kind])
            self._step_losses[kind] = loss.detach()
            total = loss if total is None else total + loss
        assert total is not None
        return total

    def _method_loss(self, kind: Objective, model: nn.Module, batch: Any) -> Tensor:
        if batch is None:
            raise ValueError(f"a {kind} step has no {kind} batch (no {kind}_dataset)")
        fn = self.method.forget_loss if kind == "forget" else self.method.retain_loss
        loss = fn(model, batch, self.run)
        if loss is None:
            name = getattr(self.method, "name", type(self.method).__name__)
            raise ValueError(f"method {name!r} has no {kind} loss for a {kind} step")
        return loss * (self.forget_weight if kind == "forget" else self.retain_weight)

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """FLOPs of the half (or, joint, halves) of a paired batch the step used."""
        if not isinstance(inputs, PairedBatch):
            return super().floating_point_ops(inputs)
        objective = self.objective_at(self.state.global_step)
        kinds = ("forget", "retain") if objective is None else (objective,)
        return sum(
            super(DualOptimTrainer, self).floating_point_ops(inputs[k])
            for k in kinds
            if isinstance(inputs.get(k), Mapping)
        )

    # ------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds, to the Trainer's training logs: ``loss/forget`` and ``loss/retain`` (the
        weighted loss, mean over the steps of that kind since the last log) and
        ``learning_rate/forget``, ``learning_rate/retain`` (the step sizes; the Trainer's
        ``learning_rate`` is the scheduler's factor on both)."""
        if "loss" in logs and "learning_rate" in logs:
            self._add_phase_logs(logs)
        super().log(logs, start_time)

    def _add_phase_logs(self, logs: dict[str, float]) -> None:
        world = self.accelerator.num_processes
        for kind in ("forget", "retain"):
            steps = self._phase_step_counts[kind]
            total = self._phase_loss_sums.pop(kind, None)
            self._phase_step_counts[kind] = 0
            if total is None or steps == 0:
                continue
            if world > 1:  # every process logs here together; all are in the same phases
                total = self.accelerator.reduce(total, reduction="mean")
            logs[f"loss/{kind}"] = float(total) / steps
        optimizer = self._objective_optimizer
        if optimizer is not None and optimizer.param_groups:
            group = optimizer.param_groups[0]
            factor = float(logs["learning_rate"])
            for kind in ("forget", "retain"):
                if f"{kind}_lr" in group:
                    logs[f"learning_rate/{kind}"] = factor * float(group[f"{kind}_lr"])


def _keep_embeddings_fp32_in_bitsandbytes(model: nn.Module) -> None:
    """bitsandbytes' 8-bit optimizers keep embeddings' states in 32 bit (SPEC §1.5), as the
    Trainer does for its own bitsandbytes optimizers."""
    import bitsandbytes  # the 'bnb' extra; build_optimizer fails clearly without it

    manager = bitsandbytes.optim.GlobalOptimManager.get_instance()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            manager.register_module_override(module, "weight", {"optim_bits": 32})


__all__ = [
    "DualOptimTrainer",
    "ForgetRetainPair",
    "PairCollator",
    "PairedBatch",
    "PairedDataset",
    "recipe_optimizer",
    "recipe_values",
]
