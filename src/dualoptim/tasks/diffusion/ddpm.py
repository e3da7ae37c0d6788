"""The DDPM objective and classifier-free-guided sampling (SPEC §2.2), on diffusers' schedulers.

Training: ε-prediction MSE at a uniformly drawn timestep of a linear β schedule (1e-4 → 0.02,
T = 1000), labels replaced by the empty condition with probability ``label_dropout``.
Sampling: ε̂ = (1 + w)·ε_c − w·ε_∅ with w = 2 (diffusers' ``guidance_scale`` = 1 + w = 3),
by DDIM (deterministic, few steps) or DDPM ancestral sampling. Randomness comes from the
global RNG during training (the engine checkpoints it) and from an explicit generator when
sampling, so samples for a given seed are the same whatever ran before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor
from tqdm.auto import tqdm

from dualoptim.tasks.diffusion.models import Denoiser


@dataclass(frozen=True)
class NoiseSchedule:
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        if self.timesteps < 2:
            raise ValueError(f"noise.timesteps must be >= 2, got {self.timesteps}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError("noise: need 0 < beta_start < beta_end < 1")

    def ddpm(self) -> DDPMScheduler:
        return DDPMScheduler(
            num_train_timesteps=self.timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            beta_schedule="linear",
        )


@dataclass(frozen=True)
class SamplingSpec:
    """How images are generated: sampler, its steps, guidance weight w, batch size."""

    sampler: Literal["ddim", "ddpm"] = "ddim"
    steps: int = 50
    guidance: float = 2.0
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("sampling.steps and sampling.batch_size must be >= 1")
        if self.guidance < 0:
            raise ValueError(f"sampling.guidance must be >= 0, got {self.guidance}")


def noised(
    scheduler: DDPMScheduler, x0: Tensor, t: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """(x_t, ε, t): ``x0`` noised at timesteps ``t`` (uniform over [0, T) when None)."""
    if t is None:
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), device=x0.device)
    noise = torch.randn_like(x0)
    return scheduler.add_noise(x0, noise, t), noise, t


def drop_labels(labels: Tensor, null_label: int, p: float) -> Tensor:
    """Labels replaced by the empty condition with probability ``p`` each (CFG training)."""
    if p <= 0:
        return labels
    drop = torch.rand(labels.shape, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def denoising_losses(
    model: Denoiser,
    scheduler: DDPMScheduler,
    x0: Tensor,
    labels: Tensor,
    label_dropout: float = 0.0,
) -> Tensor:
    """Per-image ε-prediction MSE (B,): the DDPM loss before the batch mean."""
    x_t, noise, t = noised(scheduler, x0)
    labels = drop_labels(labels, model.null_label, label_dropout)
    return (model(x_t, t, labels) - noise).square().flatten(1).mean(1)


def guided_noise(model: Denoiser, x: Tensor, t: Tensor, labels: Tensor, w: float) -> Tensor:
    """ε̂ = (1 + w)·ε_c − w·ε_∅, both halves in one batch."""
    if w == 0:
        return model(x, t.expand(len(x)), labels)
    null = torch.full_like(labels, model.null_label)
    both = model(torch.cat([x, x]), t.expand(2 * len(x)), torch.cat([labels, null]))
    conditional, unconditional = both.chunk(2)
    return (1 + w) * conditional - w * unconditional


def _scheduler(schedule: NoiseSchedule, spec: SamplingSpec) -> DDPMScheduler | DDIMScheduler:
    ddpm = schedule.ddpm()
    scheduler = DDIMScheduler.from_config(ddpm.config) if spec.sampler == "ddim" else ddpm
    scheduler.set_timesteps(spec.steps)
    return scheduler


@torch.no_grad()
def generate(
    model: Denoiser,
    labels: Tensor,
    schedule: NoiseSchedule,
    spec: SamplingSpec,
    seed: int = 0,
    progress: bool = False,
) -> Tensor:
    """Images in [-1, 1] for ``labels``, in batches; eval mode, restored afterwards."""
    if len(labels) == 0:
        raise ValueError("no labels to generate images for")
    if int(labels.min()) < 0 or int(labels.max()) >= model.classes:
        raise ValueError(f"labels must lie in [0, {model.classes}), got {labels.unique()}")
    device = next(model.parameters()).device
    first = next(model.parameters())
    shape = _image_shape(model)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    was_training = model.training
    model.eval()
    out = []
    try:
        batches = labels.split(spec.batch_size)
        bar = tqdm(
            total=len(batches) * spec.steps, desc="sample", disable=None if progress else True
        )
        for batch in batches:
            scheduler = _scheduler(schedule, spec)
            x = torch.randn(len(batch), *shape, generator=generator).to(device, first.dtype)
            y = batch.to(device)
            for t in scheduler.timesteps:
                eps = guided_noise(model, x, t.to(device).reshape(1), y, spec.guidance)
                x = scheduler.step(eps, t, x, generator=generator).prev_sample
                bar.update(1)
            out.append(x.clamp(-1, 1).float().cpu())
        bar.close()
    finally:
        model.train(was_training)
    return torch.cat(out)


def _image_shape(model: Denoiser) -> tuple[int, int, int]:
    config = model.net.config
    size = config.sample_size
    size = size if isinstance(size, int) else size[0]
    return int(config.in_channels), int(size), int(size)
