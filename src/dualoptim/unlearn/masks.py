"""Weight masks every task builds the same way (SPEC §1.6, §2.1, §2.2): mean batch gradients,
a global top-fraction cut (SalUn's saliency), a cache on disk, and installation on the
optimizer for the objectives the mask belongs to.

Only the loss differs between tasks (cross-entropy for classifiers, the denoising loss for
diffusion), so it is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dualoptim.io import read_tensors, write_tensors
from dualoptim.optim import Objective, ObjectiveOptimizer


def mean_batch_gradients(
    model: nn.Module,
    batches: Iterable[Any],
    loss: Callable[[nn.Module, Any], Tensor],
    square: bool,
) -> dict[str, Tensor]:
    """Mean over ``batches`` of each parameter's gradient of ``loss`` (squared if ``square``:
    the diagonal Fisher estimate of SFR-on). Runs in eval mode (batch norm statistics stay
    put) and leaves no gradients behind."""
    totals = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    count = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss(model, batch).backward()
            for n, p in model.named_parameters():
                if p.grad is not None:
                    totals[n] += p.grad.square() if square else p.grad
            count += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if count == 0:
        raise ValueError("no batches to average gradients over")
    return {n: t / count for n, t in totals.items()}


def top_fraction_mask(scores: dict[str, Tensor], keep: float) -> dict[str, Tensor]:
    """True for the globally highest ``keep`` fraction of scores (the weights that may move)."""
    if not 0 < keep <= 1:
        raise ValueError(f"the kept fraction must lie in (0, 1], got {keep}")
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = max(1, round(keep * flat.numel()))
    threshold = torch.topk(flat, k).values.min()
    return {n: s >= threshold for n, s in scores.items()}


def cached_masks(path: Path | None, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    """Masks from ``path`` if it exists, else computed and saved there (atomically): a mask
    depends only on the model and the forget set, so it is made once per pair.

    Computing runs on a fork of the RNG (a diffusion mask draws noise): the run after it
    draws the same random numbers whether its mask was computed or read from the cache."""
    if path is not None and path.exists():
        return {n: m.bool() for n, m in read_tensors(path)[0].items()}
    with torch.random.fork_rng():
        masks = compute()
    if path is not None:
        write_tensors(path, {n: m.to(torch.uint8) for n, m in masks.items()})
    return masks


def install_masks(
    model: nn.Module,
    optimizer: ObjectiveOptimizer,
    masks: dict[str, Tensor],
    objectives: Sequence[Objective],
) -> None:
    """Restrict the updates of ``objectives`` to the mask's True entries (by parameter name)."""
    params = dict(model.named_parameters())
    unknown = masks.keys() - params.keys()
    if unknown:
        raise ValueError(f"mask names parameters the model does not have: {sorted(unknown)[:3]}")
    by_param = {params[n]: m for n, m in masks.items()}
    for objective in objectives:
        optimizer.set_mask(objective, by_param)
