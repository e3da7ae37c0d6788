"""Image-classification data: train/test image sets and the forget/retain split (SPEC §2.1).

Every set lives in memory as float32 tensors in [0, 1], (N, C, H, W), with int64 labels: the
data sets of the paper fit in memory, and plain tensors make seeded subsets and forget splits
exact and cheap. All randomness comes from explicit seeds through private ``torch.Generator``s,
so neither the global RNG nor a training seed ever changes a split (and splits never change
the global RNG).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import operator
import struct
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from dualoptim.io import atomic_write, fingerprint

__all__ = [
    "DATASETS",
    "ForgetSplit",
    "ImageData",
    "ImageSet",
    "load_data",
    "make_forget_split",
    "read_idx",
]

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn")

_IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
#: Where Debian's ``dataset-fashion-mnist`` (and a local MNIST, by analogy) puts the IDX files.
_SYSTEM_DIR = Path("/usr/share/datasets")
_MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": (
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
}
#: The published MD5s of the gzipped files: a download that does not match is never cached.
_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
_TORCHVISION_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10}


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


@dataclass(frozen=True)
class ForgetSplit:
    """D_f and D_r as sorted int64 indices into the training set: disjoint, together all of it."""

    forget: torch.Tensor
    retain: torch.Tensor
    description: str


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
        train=_subsample(train, per_class_train, subsample_seed, "train"),
        test=_subsample(test, per_class_test, subsample_seed, "test"),
    )


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


def read_idx(path: str | Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (the MNIST format), gunzipping it if it ends in ``.gz``.

    The file must hold exactly the bytes its header announces, so a truncated download fails
    here, naming the file, rather than later as a shape error. Returns a read-only array.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] == 0:
        raise ValueError(
            f"{path}: not an unsigned-byte IDX file (magic number {data[:4].hex() or 'missing'}, "
            "expected 000008nn with nn >= 1 dimensions)"
        )
    header = 4 + 4 * data[3]
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{data[3]}I", data[4:header])
    expected = header + math.prod(shape)
    if len(data) != expected:
        raise ValueError(
            f"{path}: IDX shape {shape} needs {expected} bytes, the file has {len(data)} "
            "(truncated or corrupt)"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


# --- options and sampling -------------------------------------------------------------------


def _check_load_options(
    test_fraction: float, per_class_train: int | None, per_class_test: int | None
) -> None:
    """Reject bad options before any (possibly slow) loading."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    for part, count in (("train", per_class_train), ("test", per_class_test)):
        if count is not None and count < 1:
            raise ValueError(f"per_class_{part} must be at least 1, got {count}")


def _shuffled_by_class(images: ImageSet, seed: int) -> list[torch.Tensor]:
    """The indices of each class, class by class, each in a random order drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    by_class = [torch.nonzero(images.y == c).flatten() for c in range(images.classes)]
    return [idx[torch.randperm(len(idx), generator=generator)] for idx in by_class]


def _subsample(images: ImageSet, per_class: int | None, seed: int, part: str) -> ImageSet:
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


def _held_out(full: ImageSet, fraction: float, seed: int, source: str) -> tuple[ImageSet, ImageSet]:
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


# --- loaders --------------------------------------------------------------------------------


def _load_sets(
    name: str, root: str | Path | None, test_fraction: float, split_seed: int
) -> tuple[ImageSet, ImageSet]:
    if name.endswith(".npz"):
        return _load_npz(Path(name), test_fraction, split_seed)
    if name == "digits":
        return _held_out(_load_digits(), test_fraction, split_seed, "digits")
    if name in _MIRRORS:
        return _load_idx_set(name, root)
    if name in _TORCHVISION_CLASSES:
        return _load_torchvision(name, root)
    raise ValueError(f"unknown data set {name!r}: use one of {', '.join(DATASETS)} or a .npz path")


def _from_uint8(x: np.ndarray, y: np.ndarray, classes: int) -> ImageSet:
    """(N, H, W) or (N, H, W, C) uint8 images → float32 (N, C, H, W) in [0, 1]."""
    chw = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    images = torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32)).div_(255)
    return ImageSet(images, torch.from_numpy(y.astype(np.int64)), classes)


def _check_images(x: np.ndarray, y: np.ndarray, where: str, x_name: str, y_name: str) -> None:
    """Fail early, naming the array, on anything ``_from_uint8`` cannot take as it is."""
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


def _check_labels(y: np.ndarray, classes: int, where: str) -> None:
    """Every label in [0, classes): a stray label would silently add classes to the model."""
    bad = (y < 0) | (y >= classes)
    if bad.any():
        raise ValueError(
            f"{where}: labels must lie in [0, {classes}), found {_counted(y[bad])}; fix the labels"
        )


def _counted(labels: np.ndarray) -> str:
    """E.g. "label 1000 (1 row), label 12 (3 rows)": the values at fault and how many rows."""
    values, counts = np.unique(labels, return_counts=True)
    pairs = zip(values.tolist(), counts.tolist(), strict=True)
    parts = [f"label {v} ({c} row{'s' if c > 1 else ''})" for v, c in pairs]
    return ", ".join(parts[:5]) + (f" and {len(parts) - 5} more" if len(parts) > 5 else "")


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
            _check_labels(y, classes, f"{path}: {name} (classes = {classes})")
        return classes
    present = np.unique(np.concatenate(list(labels.values())))
    classes = int(present[-1]) + 1
    if len(present) < classes:
        gap = int(np.setdiff1d(np.arange(classes), present)[0])
        stray = {n: y[y > gap] for n, y in labels.items() if (y > gap).any()}
        found = "; ".join(f"{n} has {_counted(y)}" for n, y in stray.items())
        raise ValueError(
            f"{path}: labels must be 0..C-1 with every class present, but no row has label "
            f"{gap} while {found}; fix the labels, or declare the class count as an integer "
            "array 'classes' in the npz (then labels may leave classes empty)"
        )
    return classes


def _load_digits() -> ImageSet:
    """scikit-learn's 1,797 8×8 digits, pixel values 0–16 scaled to [0, 1]."""
    from sklearn.datasets import load_digits  # lazy: scikit-learn takes seconds to import

    bunch = load_digits()
    images = torch.from_numpy(bunch.images / 16).float().unsqueeze(1)
    return ImageSet(images, torch.from_numpy(bunch.target).long(), 10)


def _load_npz(path: Path, test_fraction: float, split_seed: int) -> tuple[ImageSet, ImageSet]:
    """``x_train``, ``y_train`` and optionally ``x_test``, ``y_test`` and ``classes`` (the class
    count) from an ``.npz`` file."""
    arrays, names = _read_npz(path, ("x_train", "y_train", "x_test", "y_test", "classes"))
    if "x_train" not in arrays or "y_train" not in arrays:
        raise ValueError(f"{path}: needs arrays x_train and y_train, found {names}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{path}: x_test and y_test come together, found {names}")
    parts = ("train", "test") if "x_test" in arrays else ("train",)
    for part in parts:
        _check_images(
            arrays[f"x_{part}"], arrays[f"y_{part}"], f"{path}: ", f"x_{part}", f"y_{part}"
        )
    if "x_test" in arrays and arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(
            f"{path}: x_train images are {arrays['x_train'].shape[1:]}, "
            f"x_test images {arrays['x_test'].shape[1:]}"
        )
    labels = {f"y_{part}": arrays[f"y_{part}"] for part in parts}
    classes = _class_count(path, labels, arrays.get("classes"))
    train = _from_uint8(arrays["x_train"], arrays["y_train"], classes)
    if "x_test" not in arrays:
        return _held_out(train, test_fraction, split_seed, str(path))
    return train, _from_uint8(arrays["x_test"], arrays["y_test"], classes)


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


def _load_idx_set(name: str, root: str | Path | None) -> tuple[ImageSet, ImageSet]:
    """MNIST or Fashion-MNIST (10 classes) from the four IDX files."""
    directory = Path(root) if root is not None else _default_idx_dir(name)
    found = _idx_paths(directory)
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(
            f"{name}: {directory} lacks {', '.join(missing)} (plain or .gz IDX files)"
        )
    paths = [path for path in found.values() if path is not None]
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    for x, y, x_path, y_path in ((x_train, y_train, *paths[:2]), (x_test, y_test, *paths[2:])):
        _check_images(x, y, f"{directory}/", x_path.name, y_path.name)
        _check_labels(y, 10, str(y_path))
    return _from_uint8(x_train, y_train, 10), _from_uint8(x_test, y_test, 10)


def _idx_paths(directory: Path) -> dict[str, Path | None]:
    """Each of the four IDX files in ``directory``, plain or ``.gz``; None where it is missing."""
    return {
        stem: next((p for p in (directory / stem, directory / f"{stem}.gz") if p.is_file()), None)
        for stem in _IDX_STEMS
    }


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: not a valid gzip file ({err})") from err


def _cache_dir(name: str) -> Path:
    return Path.home() / ".cache" / "dualoptim" / name


def _default_idx_dir(name: str) -> Path:
    """The system copy if complete, else the cache, downloading what it lacks (MD5-checked)."""
    for directory in (_SYSTEM_DIR / name, _cache_dir(name)):
        if None not in _idx_paths(directory).values():
            return directory
    cache = _cache_dir(name)
    try:
        _download(name, cache)
    except OSError as err:
        raise FileNotFoundError(
            f"{name}: no IDX files in {_SYSTEM_DIR / name} or {cache}, and downloading failed "
            f"({err}); pass root= a directory holding them"
        ) from err
    return cache


def _download(name: str, directory: Path) -> None:
    for file, md5 in _MD5[name].items():
        if not (directory / file).is_file():
            data = _fetch(name, file, md5)
            atomic_write(directory / file, lambda f, data=data: f.write(data))


def _fetch(name: str, file: str, md5: str) -> bytes:
    """The file from the first mirror that serves it with the published MD5."""
    errors = []
    for mirror in _MIRRORS[name]:
        url = mirror + file
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                data = response.read()
        except OSError as err:
            errors.append(f"{url}: {err}")
            continue
        if hashlib.md5(data, usedforsecurity=False).hexdigest() == md5:
            return data
        errors.append(f"{url}: MD5 mismatch")
    raise OSError("; ".join(errors))


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
    directory = str(Path(root) if root is not None else _cache_dir(name))
    if name == "svhn":  # images come as (N, C, H, W); torchvision already maps label 10 to 0
        train, test = (datasets.SVHN(directory, split=s, download=True) for s in ("train", "test"))
        pairs = [(d.data.transpose(0, 2, 3, 1), d.labels) for d in (train, test)]
    else:
        cifar = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        train, test = (cifar(directory, train=t, download=True) for t in (True, False))
        pairs = [(d.data, np.asarray(d.targets)) for d in (train, test)]
    classes = _TORCHVISION_CLASSES[name]
    for (_, y), split in zip(pairs, ("train", "test"), strict=True):
        _check_labels(np.asarray(y), classes, f"{directory}: {name} {split} labels")
    return _from_uint8(*pairs[0], classes), _from_uint8(*pairs[1], classes)
