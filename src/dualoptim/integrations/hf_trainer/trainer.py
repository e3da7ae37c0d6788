"""The ``transformers.Trainer`` subclass: wires the phases, the optimizer, the paired data
and the per-phase logs of this package into the Trainer's hooks.

The Trainer keeps its own loop, data loading, LR scheduler, clipping, logging, checkpoints and
resume; each hook here only adds what DualOptim needs at that point of the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Trainer, TrainingArguments

from dualoptim.integrations.hf_trainer.checks import (
    check_counts_and_weights,
    check_datasets,
    check_trainer_setup,
    pop_refused_kwargs,
    prebuilt_optimizer,
)
from dualoptim.integrations.hf_trainer.data import PairCollator, PairedBatch, PairedDataset
from dualoptim.integrations.hf_trainer.logs import PhaseLosses, step_size_logs
from dualoptim.integrations.hf_trainer.optimizer import build_trainer_optimizer, parameter_groups
from dualoptim.integrations.hf_trainer.phases import PhaseCycle, losses_of
from dualoptim.optim import Objective, ObjectiveOptimizer
from dualoptim.optim.dual import SpecLike
from dualoptim.optim.settings import Setting
from dualoptim.unlearn.method import Method, RunState


class DualOptimTrainer(Trainer):
    """A ``transformers.Trainer`` that unlearns with DualOptim (or a baseline setting).

    Args:
        model, args: as for ``Trainer``. ``args.learning_rate`` (and the Adam fields) set the
            default optimizers' hyperparameters when set; see
            :func:`~dualoptim.integrations.hf_trainer.recipe_optimizer`.
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
            ``lr`` is the absolute step size. Default: ``recipe_optimizer(args)``.
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
        pop_refused_kwargs(kwargs)
        self.setting, self.resolved = setting, Setting(setting)
        self.joint = self.resolved.joint
        check_counts_and_weights(forget_steps, retain_steps, forget_weight, retain_weight)
        self.cycle = PhaseCycle(forget_steps, retain_steps, joint=self.joint)
        self.schedule, self.phases = self.cycle.schedule, self.cycle.phases
        check_datasets(self.cycle.needed, forget_dataset, retain_dataset)
        optimizer = prebuilt_optimizer(kwargs)
        train_dataset = PairedDataset(forget_dataset, retain_dataset)  # checks empty sets

        super().__init__(model, args, **kwargs)

        check_trainer_setup(self)
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
        self._phase_losses = PhaseLosses()

    # ------------------------------------------------------------------ phases
    def objective_at(self, step: int) -> Objective | None:
        """The objective of optimizer step ``step`` (0-based); None = a joint step."""
        return self.cycle.objective_at(step)

    @property
    def objective_optimizer(self) -> ObjectiveOptimizer | None:
        """The dualoptim optimizer itself (``self.optimizer`` is accelerate's wrapper)."""
        return self._objective_optimizer

    def _sync_run(self, objective: Objective | None) -> None:
        step = self.state.global_step
        self.run.step, self.run.cycle, self.run.phase = step, self.cycle.cycle_at(step), objective
        if self.state.max_steps and self.state.max_steps > 0:
            self.run.total_steps = self.state.max_steps

    # ------------------------------------------------------------------ optimizer
    def optimizer_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Parameter groups: weight decay, and none on biases and norm weights (the Trainer's
        own rule, ``get_decay_parameter_names``). With ``dual_plus_8bit`` embeddings get a group
        with fp32 states (SPEC §1.5)."""
        return parameter_groups(
            model,
            self.get_decay_parameter_names(model),
            fp32_embeddings=self.resolved.plus and self.resolved.eight_bit,
        )

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Build the dualoptim optimizer of ``setting`` (once); the Trainer's LR scheduler then
        drives every group's ``lr`` factor."""
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            optimizer = build_trainer_optimizer(
                self.resolved,
                opt_model,
                self.optimizer_groups(opt_model),
                self._specs,
                self.args,
                plus=self.plus,
                per_phase_lr=self.per_phase_lr,
            )
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
        self._phase_losses.end_micro_batch(micro_batches)
        if self.accelerator.sync_gradients:  # the last micro-batch of this optimizer step
            self._phase_losses.end_step(losses_of(objective))
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
        total: Tensor | None = None
        for kind in losses_of(self.objective_at(self.state.global_step)):
            loss = self._method_loss(kind, model, inputs[kind])
            self._phase_losses.record(kind, loss)
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
        return sum(
            super(DualOptimTrainer, self).floating_point_ops(inputs[k])
            for k in losses_of(self.objective_at(self.state.global_step))
            if isinstance(inputs.get(k), Mapping)
        )

    # ------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds, to the Trainer's training logs, ``loss/forget`` and ``loss/retain`` and the
        step sizes ``learning_rate/forget`` and ``learning_rate/retain``
        (:mod:`~dualoptim.integrations.hf_trainer.logs`)."""
        if "loss" in logs and "learning_rate" in logs:
            reduce = None
            if self.accelerator.num_processes > 1:  # every process logs here together
                reduce = partial(self.accelerator.reduce, reduction="mean")
            logs.update(self._phase_losses.pop_means(reduce))
            logs.update(step_size_logs(self._objective_optimizer, logs["learning_rate"]))
        super().log(logs, start_time)
