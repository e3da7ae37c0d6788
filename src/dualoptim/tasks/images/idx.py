"""MNIST and Fashion-MNIST from their IDX files: reading, finding and downloading them.

The files are taken from ``root``, else from the system copy (Debian's
``dataset-fashion-mnist``, and a local MNIST by analogy), else from the user cache, which
is filled from the published mirrors; a download whose MD5 differs from the published one
is never cached.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from dualoptim.io import atomic_write
from dualoptim.tasks.images.sets import ImageSet, check_images, check_labels, from_uint8

__all__ = ["IDX_SETS", "download_dir", "load_idx_set", "read_idx"]

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
#: The data sets stored as IDX files.
IDX_SETS: tuple[str, ...] = tuple(_MIRRORS)


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


def load_idx_set(name: str, root: str | Path | None) -> tuple[ImageSet, ImageSet]:
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
        check_images(x, y, f"{directory}/", x_path.name, y_path.name)
        check_labels(y, 10, str(y_path))
    return from_uint8(x_train, y_train, 10), from_uint8(x_test, y_test, 10)


def download_dir(name: str) -> Path:
    """The user cache a data set is downloaded into when no directory is given."""
    return Path.home() / ".cache" / "dualoptim" / name


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


def _default_idx_dir(name: str) -> Path:
    """The system copy if complete, else the cache, downloading what it lacks (MD5-checked)."""
    for directory in (_SYSTEM_DIR / name, download_dir(name)):
        if None not in _idx_paths(directory).values():
            return directory
    cache = download_dir(name)
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
