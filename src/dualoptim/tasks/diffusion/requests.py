"""Continual diffusion unlearning (SPEC §2.6): the forget classes one after another.

Request k forgets class c_k from the model request k-1 left: its forget data is c_k's images,
its retain data every class not forgotten yet (SA: the original model's samples of them), and
it is measured on every class forgotten so far (FA and the forgotten FIDs: their means) and
the classes remaining (FID, remaining accuracy). Masks (SalUn, SFR-on) are computed on the
model the request starts from and cached for the first request only (the cache is keyed by
the original model). SA's Fisher and replay samples stay the original model's, as in a
one-shot run.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from dualoptim.tasks.diffusion.config import GenUnlearnSpec
from dualoptim.tasks.diffusion.run import run_unlearning
from dualoptim.tasks.diffusion.world import World
from dualoptim.unlearn.requests import EndState


def view(world: World, classes: Sequence[int], k: int) -> World:
    """The world as request ``k`` (of one class each, ``classes`` in order) sees it."""
    seen = copy.copy(world)
    seen.forgotten_before = tuple(classes[: k - 1])
    seen.masks_cached = k == 1
    return seen


def step(
    world: World,
    classes: Sequence[int],
    spec: GenUnlearnSpec,
    seed: int,
    grids: Sequence[Path | None],
    k: int,
    previous: EndState | None,
    checkpoint: Path,
) -> EndState:
    """Request ``k`` of a chain (``unlearn/requests.py``): its end state and measurements;
    ``grids[k - 1]``: where its samples' grid goes (None: nowhere)."""
    result = run_unlearning(
        spec,
        view(world, classes, k),
        classes[k - 1],
        seed,
        grid=grids[k - 1],
        checkpoint_dir=checkpoint,
        start=previous,
    )
    model, optimizer = result.pop("end")
    return EndState(model.state_dict(), optimizer.state_dict(), result["seconds"], result)
