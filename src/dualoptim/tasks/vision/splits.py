"""The forget/retain split of a classification training set (SPEC §2.1).

D_f is a random share of the training set or whole classes; the split's seed is its own
(through a private ``torch.Generator``), so each seed of an experiment draws its own forget
set whatever seed its training uses, and drawing it never changes the global RNG.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dualoptim.tasks.images.sets import ImageSet

__all__ = ["ForgetSplit", "make_forget_split"]


@dataclass(frozen=True)
class ForgetSplit:
    """D_f and D_r as sorted int64 indices into the training set: disjoint, together all of it."""

    forget: torch.Tensor
    retain: torch.Tensor
    description: str


def make_forget_split(
    train: ImageSet,
    *,
    fraction: float | None = None,
    classes: Sequence[int] | None = None,
    seed: int = 0,
) -> ForgetSplit:
    """Cut D_f from ``train``: a random ``fraction`` of it (drawn with ``seed``) or whole classes.

    Exactly one of ``fraction`` and ``classes`` is given. The forget set of a random split has
    round(fraction·N) examples; ``seed`` is the split's own, so each seed of an experiment
    draws its own forget set whatever seed its training uses.
    """
    if fraction is not None and classes is None:
        forget, description = _random_forget(train, fraction, seed)
    elif classes is not None and fraction is None:
        forget, description = _class_forget(train, classes)
    else:
        raise ValueError(
            "give exactly one of fraction= (a random share of train) or classes= (whole classes)"
        )
    in_forget = torch.zeros(len(train), dtype=torch.bool)
    in_forget[forget] = True
    if in_forget.all():
        raise ValueError(
            f"{description} covers all {len(train)} training examples: "
            "the retain set would be empty"
        )
    return ForgetSplit(
        forget=in_forget.nonzero().flatten(),
        retain=(~in_forget).nonzero().flatten(),
        description=description,
    )


def _random_forget(train: ImageSet, fraction: float, seed: int) -> tuple[torch.Tensor, str]:
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1) (exclusive), got {fraction}")
    count = round(fraction * len(train))
    if count == 0:
        raise ValueError(
            f"fraction {fraction} of {len(train)} training examples rounds to an empty forget set"
        )
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return order[:count], f"random {fraction * 100:g}% (seed {seed})"


def _class_forget(train: ImageSet, classes: Sequence[int]) -> tuple[torch.Tensor, str]:
    chosen = sorted({operator.index(c) for c in classes})
    if not chosen:
        raise ValueError("classes is empty: there is nothing to forget")
    present = set(train.y.unique().tolist())
    for c in chosen:
        if not 0 <= c < train.classes:
            raise ValueError(f"class {c} is outside the data set's classes [0, {train.classes})")
        if c not in present:
            raise ValueError(f"class {c} has no examples in the training set")
    forget = torch.isin(train.y, torch.tensor(chosen)).nonzero().flatten()
    return forget, f"classes {chosen}"
