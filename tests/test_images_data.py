"""Image data sets (SPEC §2.1): loaders, subsampling, held-out splits, IDX, .npz, errors."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dualoptim.tasks.images import idx
from dualoptim.tasks.images.idx import read_idx
from dualoptim.tasks.images.loaders import load_data
from dualoptim.tasks.images.sets import ImageData, ImageSet
from helpers import toy_images

IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_data("digits")


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file, written from the format's definition (not by the reader)."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def idx_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Four small MNIST-like arrays: 30 train and 20 test 5×4 images, labels 0–9."""
    rng = np.random.default_rng(seed)
    return {
        IDX_STEMS[0]: rng.integers(0, 256, (30, 5, 4), dtype=np.uint8),
        IDX_STEMS[1]: np.arange(30, dtype=np.uint8) % 10,
        IDX_STEMS[2]: rng.integers(0, 256, (20, 5, 4), dtype=np.uint8),
        IDX_STEMS[3]: np.arange(20, dtype=np.uint8) % 10,
    }


def write_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def rows(images: ImageSet) -> set[bytes]:
    return {row.numpy().tobytes() for row in images.x}


# --- digits, held-out split, subsampling -----------------------------------------------------


def test_digits_loads_with_shapes_ranges_and_a_stratified_split(digits: ImageData) -> None:
    from sklearn.datasets import load_digits

    full = np.bincount(load_digits().target, minlength=10)
    train, test = digits.train, digits.test
    assert digits.name == "digits"
    assert len(train) + len(test) == 1797
    assert train.x.shape[1:] == test.x.shape[1:] == (1, 8, 8)
    assert train.x.dtype == torch.float32
    assert train.y.dtype == torch.int64
    assert train.classes == test.classes == 10
    assert float(train.x.min()) == 0.0
    assert float(train.x.max()) == 1.0
    assert torch.equal(train.x * 16, (train.x * 16).round())  # pixel values k/16
    expected_test = np.array([round(0.2 * n) for n in full])
    assert torch.bincount(test.y, minlength=10).tolist() == expected_test.tolist()
    assert torch.bincount(train.y, minlength=10).tolist() == (full - expected_test).tolist()
    # train and test partition the data set: together they are its rows, each exactly once
    all_rows = sorted(row.tobytes() for row in (load_digits().images / 16).astype(np.float32))
    split_rows = sorted(row.numpy().tobytes() for row in torch.cat([train.x, test.x])[:, 0])
    assert split_rows == all_rows


def test_held_out_split_is_seeded(digits: ImageData) -> None:
    again = load_data("digits", split_seed=0)
    other = load_data("digits", split_seed=1, test_fraction=0.3)
    assert torch.equal(again.test.x, digits.test.x)
    assert torch.equal(again.test.y, digits.test.y)
    assert len(other.test) == pytest.approx(0.3 * 1797, abs=10)
    assert rows(other.test) != rows(digits.test)


def test_subsample_keeps_per_class_counts_deterministically(digits: ImageData) -> None:
    small = load_data("digits", per_class_train=20, per_class_test=5, subsample_seed=4)
    assert torch.bincount(small.train.y, minlength=10).tolist() == [20] * 10
    assert torch.bincount(small.test.y, minlength=10).tolist() == [5] * 10
    assert rows(small.train) <= rows(digits.train)
    assert rows(small.test) <= rows(digits.test)
    same = load_data("digits", per_class_train=20, per_class_test=5, subsample_seed=4)
    assert torch.equal(same.train.x, small.train.x)
    assert torch.equal(same.test.y, small.test.y)
    other = load_data("digits", per_class_train=20, subsample_seed=5)
    assert rows(other.train) != rows(small.train)
    assert len(other.test) == len(digits.test)  # per_class_test=None keeps the whole test set


def test_subsample_names_the_short_class(tmp_path: Path) -> None:
    x = np.zeros((6, 2, 2), dtype=np.uint8)
    y = np.array([0, 0, 0, 1, 2, 2])
    path = write_npz(tmp_path / "small.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    assert torch.bincount(load_data(path, per_class_test=1).test.y).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match=r"per_class_train=2, but class 1 has only 1 train"):
        load_data(path, per_class_train=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_fraction": 0.0}, r"test_fraction must lie in \(0, 1\), got 0.0"),
        ({"test_fraction": 1.0}, r"test_fraction must lie in \(0, 1\), got 1.0"),
        ({"per_class_train": 0}, r"per_class_train must be at least 1, got 0"),
        ({"per_class_test": -3}, r"per_class_test must be at least 1, got -3"),
        ({"per_class_train": 500}, r"per_class_train=500, but class 0 has only \d+ train"),
    ],
)
def test_load_options_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_data("digits", **kwargs)


def test_unknown_name_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown data set 'mnst'.*digits, mnist, fashion-mnist"):
        load_data("mnst")


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is not None, reason="torchvision would download"
)
@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_torchvision_sets_say_to_install_torchvision(name: str) -> None:
    with pytest.raises(ImportError, match=rf"'{name}' is read through torchvision.*install"):
        load_data(name)


def test_image_set_checks_its_fields() -> None:
    good = toy_images([0, 1, 2])
    assert len(good) == 3
    assert good.subset(torch.tensor([2, 0])).y.tolist() == [2, 0]
    with pytest.raises(ValueError, match="x must be float32"):
        ImageSet(good.x.double(), good.y, 10)
    with pytest.raises(ValueError, match="y must be int64"):
        ImageSet(good.x, good.y[:2], 10)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        ImageSet(good.x, good.y, 2)


# --- IDX files -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, suffix: str) -> None:
    images = np.random.default_rng(0).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / f"images{suffix}", images)), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / f"labels{suffix}", labels)), labels)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_data_set_loads_from_root(tmp_path: Path, name: str) -> None:
    arrays = idx_arrays()
    for i, (stem, array) in enumerate(arrays.items()):  # mix plain and gzipped files
        write_idx(tmp_path / (stem + (".gz" if i % 2 else "")), array)
    loaded = load_data(name, tmp_path)
    assert loaded.name == name
    assert loaded.train.x.shape == (30, 1, 5, 4)
    assert loaded.test.x.shape == (20, 1, 5, 4)
    assert loaded.train.classes == loaded.test.classes == 10
    expected = torch.from_numpy(arrays[IDX_STEMS[0]]).float().unsqueeze(1) / 255
    assert torch.allclose(loaded.train.x, expected)
    assert loaded.test.y.tolist() == arrays[IDX_STEMS[3]].tolist()


def test_idx_data_set_names_missing_files(tmp_path: Path) -> None:
    write_idx(tmp_path / IDX_STEMS[0], idx_arrays()[IDX_STEMS[0]])
    with pytest.raises(FileNotFoundError, match=r"lacks train-labels-idx1-ubyte, t10k-images"):
        load_data("mnist", tmp_path)


def test_idx_data_set_refuses_mismatched_files(tmp_path: Path) -> None:
    arrays = idx_arrays()
    arrays[IDX_STEMS[3]] = arrays[IDX_STEMS[3]][:-1]
    for stem, array in arrays.items():
        write_idx(tmp_path / stem, array)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte has 20 images but t10k-labels"):
        load_data("mnist", tmp_path)


def gz(raw: bytes) -> bytes:
    return gzip.compress(raw)


GOOD = idx_bytes(np.zeros((3, 2, 2), dtype=np.uint8))


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("float.idx", b"\x00\x00\x0d\x01" + GOOD[4:], r"magic number 00000d01"),
        ("swapped.idx", b"\x08\x03\x00\x00" + GOOD[4:], r"magic number 08030000"),
        ("empty.idx", b"", r"magic number missing"),
        ("header.idx", GOOD[:9], r"truncated IDX header \(9 of 16 bytes\)"),
        ("data.idx", GOOD[:-1], r"needs 28 bytes, the file has 27 \(truncated"),
        ("extra.idx", GOOD + b"\x00", r"needs 28 bytes, the file has 29"),
        ("data.idx.gz", gz(GOOD[:-2]), r"needs 28 bytes, the file has 26"),
        ("cut.idx.gz", gz(GOOD)[:-6], r"not a valid gzip file"),
        ("plain.idx.gz", GOOD, r"not a valid gzip file"),
    ],
)
def test_malformed_idx_files_are_named(
    tmp_path: Path, file: str, content: bytes, message: str
) -> None:
    path = tmp_path / file
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_download_checks_md5_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = {stem + ".gz": gz(idx_bytes(a)) for stem, a in idx_arrays().items()}
    fetched: list[str] = []

    def urlopen(url: str, timeout: float) -> io.BytesIO:
        assert timeout > 0
        fetched.append(url)
        if url.startswith("https://first/"):
            raise OSError("offline")
        return io.BytesIO(served[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(idx.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(idx, "_SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setitem(idx._MIRRORS, "mnist", ("https://first/", "https://second/"))
    md5 = {file: hashlib.md5(raw).hexdigest() for file, raw in served.items()}
    monkeypatch.setitem(idx._MD5, "mnist", md5)

    loaded = load_data("mnist")
    cache = tmp_path / "home" / ".cache" / "dualoptim" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(served)
    assert len(loaded.train) == 30
    assert len(fetched) == 8
    load_data("mnist")
    assert len(fetched) == 8  # the second load reads the cache

    for path in cache.iterdir():
        path.unlink()
    monkeypatch.setitem(idx._MD5, "mnist", dict.fromkeys(md5, "0" * 32))
    with pytest.raises(FileNotFoundError, match=r"downloading failed .*second/.*MD5 mismatch"):
        load_data("mnist")
    assert not list(cache.iterdir())  # a bad download is never cached


# --- .npz files ------------------------------------------------------------------------------


def test_npz_with_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (12, 4, 5, 3), dtype=np.uint8)  # (N, H, W, C)
    x_test = rng.integers(0, 256, (6, 4, 5, 3), dtype=np.uint8)
    y_train = np.array([0, 1, 2] * 4, dtype=np.int32)
    y_test = np.array([0, 1, 2, 3, 4, 6])  # the largest label only in the test set
    path = write_npz(
        tmp_path / "set.npz",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=np.array(7),  # declared: class 5 has no example
    )
    loaded = load_data(path)
    assert loaded.name == path
    assert loaded.train.x.shape == (12, 3, 4, 5)
    assert loaded.test.x.shape == (6, 3, 4, 5)
    assert loaded.train.classes == loaded.test.classes == 7
    assert float(loaded.train.x[2, 1, 3, 4]) == pytest.approx(x_train[2, 3, 4, 1] / 255)
    assert loaded.test.y.dtype == torch.int64
    assert loaded.test.y.tolist() == y_test.tolist()


def test_npz_without_test_split_holds_out_a_seeded_stratified_share(tmp_path: Path) -> None:
    x = np.arange(40 * 9, dtype=np.uint8).reshape(40, 3, 3)
    y = np.repeat(np.arange(4), 10)
    path = write_npz(tmp_path / "set.npz", x_train=x, y_train=y)
    loaded = load_data(path, test_fraction=0.3, split_seed=2)
    assert loaded.train.x.shape == (28, 1, 3, 3)
    assert loaded.train.classes == 4
    assert torch.bincount(loaded.test.y).tolist() == [3, 3, 3, 3]
    assert not rows(loaded.train) & rows(loaded.test)
    assert torch.equal(load_data(path, test_fraction=0.3, split_seed=2).test.x, loaded.test.x)
    assert rows(load_data(path, test_fraction=0.3, split_seed=3).test) != rows(loaded.test)


def test_npz_held_out_split_must_not_be_empty(tmp_path: Path) -> None:
    path = write_npz(
        tmp_path / "tiny.npz", x_train=np.zeros((3, 2, 2), np.uint8), y_train=np.arange(3)
    )
    with pytest.raises(ValueError, match=r"tiny.npz: test_fraction=0.2 of 3 .* empty test split"):
        load_data(path)


X = np.zeros((4, 2, 2), dtype=np.uint8)
Y = np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": X}, r"needs arrays x_train and y_train, found \['x_train'\]"),
        ({"x_train": X, "y_train": Y, "x_test": X}, "x_test and y_test come together"),
        ({"x_train": X.astype(np.float32), "y_train": Y}, "x_train must be uint8 images .*float32"),
        ({"x_train": X[:, 0], "y_train": Y}, r"x_train must be uint8 .*shape \(4, 2\)"),
        ({"x_train": X, "y_train": Y.astype(float)}, "y_train must be integer labels .*float64"),
        ({"x_train": X, "y_train": Y[:, None]}, r"y_train must be integer labels .*\(4, 1\)"),
        ({"x_train": X, "y_train": Y[:3]}, "x_train has 4 images but y_train has 3 labels"),
        ({"x_train": X, "y_train": Y - 1}, r"y_train has negative labels \(minimum -1\)"),
        ({"x_train": X[:0], "y_train": Y[:0]}, r"x_train is empty \(shape \(0, 2, 2\)\)"),
        (
            {"x_train": X, "y_train": Y, "x_test": X[:0], "y_test": Y[:0]},
            r"x_test is empty",
        ),
        (
            {"x_train": X, "y_train": Y, "x_test": X, "y_test": -Y},
            "y_test has negative labels",
        ),
        (
            {"x_train": X, "y_train": Y, "x_test": X[:, :1], "y_test": Y},
            r"x_train images are \(2, 2\), x_test images \(1, 2\)",
        ),
    ],
)
def test_malformed_npz_is_refused_early(tmp_path: Path, arrays: dict, message: str) -> None:
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=rf"bad\.npz: {message}"):
        load_data(path)


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist (scripts/setup.sh installs it)"
)
def test_fashion_mnist_loads_from_the_debian_package_location() -> None:
    loaded = load_data("fashion-mnist", per_class_train=1200, per_class_test=200)
    full = load_data("fashion-mnist")
    assert full.train.x.shape == (60000, 1, 28, 28)
    assert full.test.x.shape == (10000, 1, 28, 28)
    assert torch.bincount(full.train.y).tolist() == [6000] * 10
    assert full.train.y[:5].tolist() == [9, 0, 0, 3, 0]  # the published label order
    assert full.test.y[:5].tolist() == [9, 2, 1, 1, 6]
    assert float(full.train.x.min()) == 0
    assert float(full.train.x.max()) == 1
    assert torch.bincount(loaded.train.y).tolist() == [1200] * 10
    assert torch.bincount(loaded.test.y).tolist() == [200] * 10
