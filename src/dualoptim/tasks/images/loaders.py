"""Image data sets by name: one entry point over scikit-learn's digits, the IDX sets, the
torchvision sets and a user's ``.npz``, with seeded held-out test sets and per-class subsets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dualoptim.tasks.images.idx import IDX_SETS, download_dir, load_idx_set
from dualoptim.tasks.images.npz import load_npz
from dualoptim.tasks.images.sets import (
    ImageData,
    ImageSet,
    check_labels,
    from_uint8,
    held_out,
    subsample,
)

__all__ = ["DATASETS", "load_data"]

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn")

_TORCHVISION_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10}


def load_data(
    name: str,
    root: str | Path | None = None,
    *,
    per_class_train: int | None = None,
    per_class_test: int | None = None,
    subsample_seed: int = 0,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> ImageData:
    """Load a data set by name (one of ``DATASETS``) or from a path ending in ``.npz``.

    ``root`` is the directory of the IDX files (mnist, fashion-mnist) or of torchvision's
    downloads (cifar10, cifar100, svhn); digits and ``.npz`` ignore it. Sets without a test
    split of their own (digits, an ``.npz`` without ``x_test``) hold out a stratified
    ``test_fraction`` of each class, drawn with ``split_seed``. ``per_class_train`` and
    ``per_class_test`` then keep that many examples of every class, drawn with
    ``subsample_seed``, for balanced small-scale runs.
    """
    _check_load_options(test_fraction, per_class_train, per_class_test)
    train, test = _load_sets(name, root, test_fraction, split_seed)
    return ImageData(
        name=name,
        train=subsample(train, per_class_train, subsample_seed, "train"),
        test=subsample(test, per_class_test, subsample_seed, "test"),
    )


def _check_load_options(
    test_fraction: float, per_class_train: int | None, per_class_test: int | None
) -> None:
    """Reject bad options before any (possibly slow) loading."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    for part, count in (("train", per_class_train), ("test", per_class_test)):
        if count is not None and count < 1:
            raise ValueError(f"per_class_{part} must be at least 1, got {count}")


def _load_sets(
    name: str, root: str | Path | None, test_fraction: float, split_seed: int
) -> tuple[ImageSet, ImageSet]:
    if name.endswith(".npz"):
        return load_npz(Path(name), test_fraction, split_seed)
    if name == "digits":
        return held_out(_load_digits(), test_fraction, split_seed, "digits")
    if name in IDX_SETS:
        return load_idx_set(name, root)
    if name in _TORCHVISION_CLASSES:
        return _load_torchvision(name, root)
    raise ValueError(f"unknown data set {name!r}: use one of {', '.join(DATASETS)} or a .npz path")


def _load_digits() -> ImageSet:
    """scikit-learn's 1,797 8×8 digits, pixel values 0–16 scaled to [0, 1]."""
    from sklearn.datasets import load_digits  # lazy: scikit-learn takes seconds to import

    bunch = load_digits()
    images = torch.from_numpy(bunch.images / 16).float().unsqueeze(1)
    return ImageSet(images, torch.from_numpy(bunch.target).long(), 10)


def _load_torchvision(name: str, root: str | Path | None) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10/100 or SVHN through torchvision, downloaded into ``root`` or the cache."""
    try:
        from torchvision import datasets
    except ImportError as err:
        raise ImportError(
            f"data set {name!r} is read through torchvision, which is not installed: install "
            "torchvision (the build that matches your torch), or use digits, mnist, "
            "fashion-mnist or an .npz file"
        ) from err
    directory = str(Path(root) if root is not None else download_dir(name))
    if name == "svhn":  # images come as (N, C, H, W); torchvision already maps label 10 to 0
        train, test = (datasets.SVHN(directory, split=s, download=True) for s in ("train", "test"))
        pairs = [(d.data.transpose(0, 2, 3, 1), d.labels) for d in (train, test)]
    else:
        cifar = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        train, test = (cifar(directory, train=t, download=True) for t in (True, False))
        pairs = [(d.data, np.asarray(d.targets)) for d in (train, test)]
    classes = _TORCHVISION_CLASSES[name]
    for (_, y), split in zip(pairs, ("train", "test"), strict=True):
        check_labels(np.asarray(y), classes, f"{directory}: {name} {split} labels")
    return from_uint8(*pairs[0], classes), from_uint8(*pairs[1], classes)
