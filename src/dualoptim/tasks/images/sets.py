"""Image sets in memory, their checks, and the seeded per-class sampling both tasks rely on.

Every set lives in memory as float32 tensors in [0, 1], (N, C, H, W), with int64 labels: the
data sets of the paper fit in memory, and plain tensors make seeded subsets and forget splits
exact and cheap. All randomness comes from explicit seeds through private ``torch.Generator``s,
so neither the global RNG nor a training seed ever changes a split (and splits never change
the global RNG).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from dualoptim.io import fingerprint

__all__ = [
    "ImageData",
    "ImageSet",
    "check_images",
    "check_labels",
    "counted",
    "from_uint8",
    "held_out",
    "subsample",
]


@dataclass(frozen=True)
class ImageSet:
    """Images with their labels; ``classes`` counts every class of the data set, present or not.

    Checked on construction, so every consumer can trust the shapes, dtypes and label range.
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: int

    def __post_init__(self) -> None:
        if self.x.dtype != torch.float32 or self.x.ndim != 4:
            raise ValueError(
                f"x must be float32 (N, C, H, W), got {self.x.dtype} {tuple(self.x.shape)}"
            )
        if self.y.dtype != torch.int64 or self.y.shape != self.x.shape[:1]:
            raise ValueError(
                f"y must be int64 (N,) with N = {len(self.x)}, "
                f"got {self.y.dtype} {tuple(self.y.shape)}"
            )
        if len(self.y) and not 0 <= int(self.y.min()) <= int(self.y.max()) < self.classes:
            raise ValueError(
                f"labels must lie in [0, {self.classes}), "
                f"got [{int(self.y.min())}, {int(self.y.max())}]"
            )

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> ImageSet:
        """The examples at ``index`` (int64 indices or a bool mask), with the same ``classes``."""
        return ImageSet(self.x[index], self.y[index], self.classes)

    @cached_property
    def fingerprint(self) -> str:
        """The content's hash (images, labels, class count): what a cached model trained on
        this set is keyed by, so replacing a file at the same path retrains."""
        return fingerprint(self.x, self.y, self.classes)


@dataclass(frozen=True)
class ImageData:
    """A named data set: the training set (which D_f and D_r are cut from) and D_t."""

    name: str
    train: ImageSet
    test: ImageSet

    @property
    def fingerprint(self) -> str:
        """The data actually used (both sets, after loading and subsampling), as records
        carry it."""
        return fingerprint(self.train.fingerprint, self.test.fingerprint)


# --- sampling -------------------------------------------------------------------------------


def _shuffled_by_class(images: ImageSet, seed: int) -> list[torch.Tensor]:
    """The indices of each class, class by class, each in a random order drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    by_class = [torch.nonzero(images.y == c).flatten() for c in range(images.classes)]
    return [idx[torch.randperm(len(idx), generator=generator)] for idx in by_class]


def subsample(images: ImageSet, per_class: int | None, seed: int, part: str) -> ImageSet:
    """Keep ``per_class`` random examples of every class, in their original order."""
    if per_class is None:
        return images
    keep = []
    for c, idx in enumerate(_shuffled_by_class(images, seed)):
        if len(idx) < per_class:
            raise ValueError(
                f"per_class_{part}={per_class}, but class {c} has only {len(idx)} {part} examples"
            )
        keep.append(idx[:per_class])
    return images.subset(torch.cat(keep).sort().values)


def held_out(full: ImageSet, fraction: float, seed: int, source: str) -> tuple[ImageSet, ImageSet]:
    """Hold out round(fraction·n_c) random examples of each class n_c as the test set."""
    in_test = torch.zeros(len(full), dtype=torch.bool)
    for idx in _shuffled_by_class(full, seed):
        in_test[idx[: round(fraction * len(idx))]] = True
    if in_test.all() or not in_test.any():
        empty = "train" if in_test.all() else "test"
        raise ValueError(
            f"{source}: test_fraction={fraction} of {len(full)} examples leaves an empty "
            f"{empty} split"
        )
    return full.subset(~in_test), full.subset(in_test)


# --- stored uint8 images --------------------------------------------------------------------


def from_uint8(x: np.ndarray, y: np.ndarray, classes: int) -> ImageSet:
    """(N, H, W) or (N, H, W, C) uint8 images → float32 (N, C, H, W) in [0, 1]."""
    chw = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    images = torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32)).div_(255)
    return ImageSet(images, torch.from_numpy(y.astype(np.int64)), classes)


def check_images(x: np.ndarray, y: np.ndarray, where: str, x_name: str, y_name: str) -> None:
    """Fail early, naming the array, on anything ``from_uint8`` cannot take as it is."""
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise ValueError(
            f"{where}{x_name} must be uint8 images (N, H, W) or (N, H, W, C), "
            f"got {x.dtype} of shape {x.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise ValueError(
            f"{where}{y_name} must be integer labels (N,), got {y.dtype} of shape {y.shape}"
        )
    if x.size == 0:
        raise ValueError(f"{where}{x_name} is empty (shape {x.shape})")
    if len(x) != len(y):
        raise ValueError(f"{where}{x_name} has {len(x)} images but {y_name} has {len(y)} labels")
    if y.min() < 0:
        raise ValueError(
            f"{where}{y_name} has negative labels (minimum {y.min()}) in "
            f"{int((y < 0).sum())} rows: labels are class indices 0, 1, ..."
        )


def check_labels(y: np.ndarray, classes: int, where: str) -> None:
    """Every label in [0, classes): a stray label would silently add classes to the model."""
    bad = (y < 0) | (y >= classes)
    if bad.any():
        raise ValueError(
            f"{where}: labels must lie in [0, {classes}), found {counted(y[bad])}; fix the labels"
        )


def counted(labels: np.ndarray) -> str:
    """E.g. "label 1000 (1 row), label 12 (3 rows)": the values at fault and how many rows."""
    values, counts = np.unique(labels, return_counts=True)
    pairs = zip(values.tolist(), counts.tolist(), strict=True)
    parts = [f"label {v} ({c} row{'s' if c > 1 else ''})" for v, c in pairs]
    return ", ".join(parts[:5]) + (f" and {len(parts) - 5} more" if len(parts) > 5 else "")
