"""One diffusion unlearning run: the method and optimizer of a run spec, the engine's
config, and the run itself from the original denoiser to measured samples (SPEC §2.2)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dualoptim.optim.continual import carry_states
from dualoptim.optim.objective import ObjectiveOptimizer
from dualoptim.optim.settings import build_optimizer
from dualoptim.tasks.diffusion.config import CHECKPOINT_EVERY, GenUnlearnSpec
from dualoptim.tasks.diffusion.methods import Built
from dualoptim.tasks.diffusion.world import World
from dualoptim.unlearn import EngineConfig, PhaseOptions, Schedule, unlearn
from dualoptim.unlearn.requests import EndState


def build_method(spec: GenUnlearnSpec, world: World, forgotten: int) -> Built:
    """(method, forget source, retain source) of ``spec`` for one forgotten class, as its
    registered method builds them."""
    return spec.registered.build(spec, world, forgotten)


def make_optimizer(spec: GenUnlearnSpec, model: nn.Module) -> ObjectiveOptimizer:
    """Adam on both sides (the U-Net's pretraining optimizer; DiT's AdamW with wd 0 is the
    same update). ``build_optimizer`` runs the shared settings' one Adam at η_f (Alternate
    with ``per_phase_lr``: retain steps at η_r, DO's step sizes) and gives DO+ η_r as its
    retain step size."""
    return build_optimizer(
        spec.resolved_setting,
        model.parameters(),
        forget={"name": "adam"},
        retain={"name": "adam"},
        forget_lr=spec.effective_forget_lr,
        retain_lr=spec.effective_retain_lr,
        per_phase_lr=bool(spec.per_phase_lr),
    )


def engine_config(
    spec: GenUnlearnSpec, seed: int, progress: bool, checkpoint_dir: Path | None = None
) -> EngineConfig:
    return EngineConfig(
        Schedule(spec.steps, 1, 1),
        forget_batch=spec.batch_size,
        retain_batch=spec.batch_size,
        joint=spec.optimizer_setting.joint,
        forget=PhaseOptions(weight=spec.forget_weight, clip_norm=spec.forget_clip),
        retain=PhaseOptions(weight=spec.c_r, clip_norm=spec.retain_clip),
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=CHECKPOINT_EVERY if checkpoint_dir is not None else 0,
        progress=progress,
    )


def run_unlearning(
    spec: GenUnlearnSpec,
    world: World,
    forgotten: int,
    seed: int,
    grid: Path | None = None,
    checkpoint_dir: Path | None = None,
    start: EndState | None = None,
) -> dict[str, Any]:
    """Unlearn class ``forgotten`` under ``spec``; metrics, seconds, steps, curves, the
    step it resumed from, and ``end``: the model and optimizer as the run left them.

    With ``checkpoint_dir`` the run checkpoints every ``CHECKPOINT_EVERY`` steps and a killed
    run resumes there (SA's published 20k iterations are hours); the folder is removed once
    the run has finished and been measured. ``start``: a continual request's predecessor,
    whose model it starts from and whose optimizer states it takes as ``spec.state_policy``
    says."""
    model = world.new_denoiser(world.original[0] if start is None else start.model)
    method, forget, retain = build_method(spec, world, forgotten)
    optimizer = make_optimizer(spec, model)
    if start is not None:
        carry_states(optimizer, start.optimizer, spec.effective_state_policy)
    torch.manual_seed(seed)
    result = unlearn(
        model,
        method,
        forget,
        retain,
        optimizer,
        engine_config(spec, seed, world.progress, checkpoint_dir),
        resume=checkpoint_dir is not None,
    )
    images = world.generate(model, world.evaluation_labels(forgotten))
    if grid is not None:
        name = world.data.class_names[forgotten]
        world.grid(images, grid, f"{spec.label}, forgetting {name}")
    measured = {
        "metrics": world.measure(images, forgotten),
        "seconds": result.seconds,
        "steps": result.steps,
        "curves": result.curves,
        "resumed_from_step": result.resumed_from_step,
        "end": (model, optimizer),
    }
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return measured
