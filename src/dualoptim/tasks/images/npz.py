"""Image sets from a user's ``.npz`` file: the arrays it must hold and every check on them.

A file is read without pickles and checked array by array, so a malformed one fails on load
with a message naming the file, the array and what to fix, never later as a shape error.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dualoptim.tasks.images.sets import (
    ImageSet,
    check_images,
    check_labels,
    counted,
    from_uint8,
    held_out,
)

__all__ = ["load_npz"]


def load_npz(path: Path, test_fraction: float, split_seed: int) -> tuple[ImageSet, ImageSet]:
    """``x_train``, ``y_train`` and optionally ``x_test``, ``y_test`` and ``classes`` (the class
    count) from an ``.npz`` file."""
    arrays, names = _read_npz(path, ("x_train", "y_train", "x_test", "y_test", "classes"))
    if "x_train" not in arrays or "y_train" not in arrays:
        raise ValueError(f"{path}: needs arrays x_train and y_train, found {names}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{path}: x_test and y_test come together, found {names}")
    parts = ("train", "test") if "x_test" in arrays else ("train",)
    for part in parts:
        check_images(
            arrays[f"x_{part}"], arrays[f"y_{part}"], f"{path}: ", f"x_{part}", f"y_{part}"
        )
    if "x_test" in arrays and arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(
            f"{path}: x_train images are {arrays['x_train'].shape[1:]}, "
            f"x_test images {arrays['x_test'].shape[1:]}"
        )
    labels = {f"y_{part}": arrays[f"y_{part}"] for part in parts}
    classes = _class_count(path, labels, arrays.get("classes"))
    train = from_uint8(arrays["x_train"], arrays["y_train"], classes)
    if "x_test" not in arrays:
        return held_out(train, test_fraction, split_seed, str(path))
    return train, from_uint8(arrays["x_test"], arrays["y_test"], classes)


def _class_count(path: Path, labels: dict[str, np.ndarray], declared: np.ndarray | None) -> int:
    """The npz's class count: its integer ``classes`` entry, else 1 + the largest label, when
    the labels of both splits together cover every class 0..C-1 (a gap is a stray label,
    such as 1000 in a 10-class set, far likelier than 990 empty classes)."""
    if declared is not None:
        if declared.size != 1 or not np.issubdtype(declared.dtype, np.integer):
            raise ValueError(
                f"{path}: classes must be one integer (the class count), "
                f"got {declared.dtype} of shape {declared.shape}"
            )
        classes = int(declared.item())
        if classes < 1:
            raise ValueError(f"{path}: classes must be >= 1, got {classes}")
        for name, y in labels.items():
            check_labels(y, classes, f"{path}: {name} (classes = {classes})")
        return classes
    present = np.unique(np.concatenate(list(labels.values())))
    classes = int(present[-1]) + 1
    if len(present) < classes:
        gap = int(np.setdiff1d(np.arange(classes), present)[0])
        stray = {n: y[y > gap] for n, y in labels.items() if (y > gap).any()}
        found = "; ".join(f"{n} has {counted(y)}" for n, y in stray.items())
        raise ValueError(
            f"{path}: labels must be 0..C-1 with every class present, but no row has label "
            f"{gap} while {found}; fix the labels, or declare the class count as an integer "
            "array 'classes' in the npz (then labels may leave classes empty)"
        )
    return classes


def _read_npz(path: Path, keys: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays of ``keys`` that ``path`` holds, and the names of all it holds; a file that
    is not a readable npz (or holds pickled objects) is an error naming it and the key."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .npz file (data.name names the file)")
    remedy = "write it with numpy.savez (x_train, y_train, optionally x_test, y_test, classes)"
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an .npz archive (truncated, or another format); {remedy}")
    key = None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {}
            for key in keys:
                if key in npz:
                    arrays[key] = npz[key]
            return arrays, sorted(npz.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        where = f"{path}: array {key!r}" if key is not None else str(path)
        raise ValueError(f"{where} is not a readable plain array ({err}); {remedy}") from err
