"""One LLM unlearning run: the optimizer of a run spec, the engine's config, and the run
itself from the target to its evaluated row (SPEC §1.3, §2.3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dualoptim.optim.continual import StatePolicy, carry_states
from dualoptim.optim.objective import ObjectiveOptimizer
from dualoptim.optim.settings import Setting, build_optimizer
from dualoptim.tasks.llm.config import LLMUnlearnSpec
from dualoptim.tasks.llm.format import PairSource
from dualoptim.tasks.llm.methods import LLMMethod
from dualoptim.tasks.llm.world import World, adamw_groups
from dualoptim.unlearn import EngineConfig, PhaseOptions, RunResult, Schedule, unlearn


def make_optimizer(
    spec: LLMUnlearnSpec, model: nn.Module, plus: Mapping[str, Any] | None = None
) -> ObjectiveOptimizer:
    """AdamW on both sides (SPEC §1.3): betas (0.9, 0.95) in every setting, wd 0.01 but not
    on biases and norms; the shared baselines run one AdamW at η_f, except Alternate with
    ``per_phase_lr``: its retain steps at η_r, DO's step sizes. ``plus``: extra
    DualOptimPlus options (benchmarks/plus_bound_llm.py compares bound_update)."""
    groups = adamw_groups(model, spec.weight_decay)
    side = {"name": "adamw", "betas": spec.betas}
    return build_optimizer(
        spec.setting,
        groups,
        forget=side,
        retain=side,
        forget_lr=spec.effective_forget_lr,
        retain_lr=spec.retain_lr,
        per_phase_lr=bool(spec.per_phase_lr),
        plus={"betas": spec.betas, **(plus or {})} if Setting(spec.setting).plus else None,
    )


def engine_config(spec: LLMUnlearnSpec, forget_rows: int, seed: int, **extra: Any) -> EngineConfig:
    joint = Setting(spec.setting).joint
    batches = -(-forget_rows // spec.batch_size)
    forget_pass = -(-batches // spec.accumulation)  # optimizer steps per pass over D_f
    if joint:
        schedule = Schedule(spec.epochs)
        per_epoch = forget_pass
    else:
        cycles = max(1, spec.epochs * forget_pass // spec.forget_steps)
        schedule = Schedule(cycles, spec.forget_steps, spec.retain_steps)
        per_epoch = (cycles // spec.epochs) * (spec.forget_steps + spec.retain_steps)
    return EngineConfig(
        schedule,
        forget_batch=spec.batch_size,
        retain_batch=spec.batch_size,
        joint=joint,
        accumulation=spec.accumulation,
        forget=PhaseOptions(weight=spec.c_f, clip_norm=spec.clip_norm),
        retain=PhaseOptions(weight=spec.retain_weight, clip_norm=spec.clip_norm),
        lr_schedule="linear",
        warmup_steps=round(per_epoch * spec.warmup_epochs),
        seed=seed,
        eval_every=spec.eval_every,
        **extra,
    )


@dataclass(frozen=True)
class Request:
    """Where a continual request starts (tasks/llm/requests.py): the model and optimizer
    state the previous request left, how its states carry over, the frozen reference of
    NPO/DPO/KL (None: the model it starts from), and where its checkpoints go."""

    model: dict[str, Tensor]
    optimizer: Mapping[str, Any] | None  # None: the first request (a fresh optimizer)
    policy: StatePolicy
    reference: nn.Module | None
    checkpoint_dir: Path


def unlearn_target(
    spec: LLMUnlearnSpec,
    world: World,
    seed: int,
    progress: bool = True,
    plus: Mapping[str, Any] | None = None,
    request: Request | None = None,
) -> tuple[nn.Module, RunResult, ObjectiveOptimizer]:
    """The target (or a request's start) unlearned under ``spec``, the engine's result and
    the optimizer. With ``model.lora`` the model is a peft model whose adapters alone moved
    (save them with ``save_pretrained``)."""
    method = LLMMethod(spec.method, spec.losses, None if request is None else request.reference)
    model = world.new_model(world.target[0] if request is None else request.model)
    forget_parts = {"qa": world.forget_pairs}
    if method.forget_needs_refusals:
        forget_parts["idk"] = world.refusal_pairs(world.splits.forget, world.forget_offset)
    retain_parts = {"qa": world.retain_pairs}
    if method.retain_needs_refusals:
        retain_parts["idk"] = world.refusal_pairs(world.splits.retain, len(world.splits.forget))
    pad = world.formatter.pad
    retain = PairSource(retain_parts, pad) if method.retain is not None else None
    torch.manual_seed(seed)
    model = world.adapted(model)  # LoRA adapters (model.lora): drawn from the seed
    optimizer = make_optimizer(spec, model, plus)
    checkpoints: dict[str, Any] = {}
    if request is not None:
        if request.optimizer is not None:
            carry_states(optimizer, request.optimizer, request.policy)
        checkpoints = {"checkpoint_dir": request.checkpoint_dir, "checkpoint_every": 20}
    result = unlearn(
        model,
        method,
        PairSource(forget_parts, pad),
        retain,
        optimizer,
        engine_config(spec, len(world.forget_pairs), seed, progress=progress, **checkpoints),
        evaluate=world.curve_evaluator() if spec.eval_every else None,
        resume=request is not None,
    )
    return model, result, optimizer


def run_unlearning(
    spec: LLMUnlearnSpec,
    world: World,
    seed: int,
    progress: bool = True,
    plus: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Unlearn the target under ``spec``; the row's metrics, seconds, steps and curves."""
    model, result, _ = unlearn_target(spec, world, seed, progress, plus)
    return measured(spec, world, model, result)


def measured(
    spec: LLMUnlearnSpec, world: World, model: nn.Module, result: RunResult
) -> dict[str, Any]:
    """The row of ``model`` after a run: metrics, seconds, steps, curves and texts."""
    evaluation = world.evaluate(model)
    idk = LLMMethod(spec.method).forget == "idk"
    metrics = world.metrics(evaluation.scores, evaluation.forget_ratios, idk, lambda: model)
    return {
        "metrics": metrics,
        "seconds": result.seconds,
        "steps": result.steps,
        "curves": result.curves,
        "variant": world.variant(idk),
        "generations": evaluation.generations,
        "downstream": world.downstream_unavailable,
    }
